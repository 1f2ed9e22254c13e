//! Separate debug information: the DWARF and symbol table of a stripped binary kept in another
//! file (what `objcopy --only-keep-debug` writes, or the unstripped build itself), accepted only
//! when it describes the binary: its Go build ID or GNU build-id equals the binary's, or, for
//! another link of the same compiled program (`go build -ldflags='-s -w'` beside a plain
//! `go build`, whose build IDs differ), the code is proven the same (see [`crate::relink`]).

use crate::elf::ElfImage;
use crate::relink::{self, Relinked};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// `NT_GNU_BUILD_ID`, owner "GNU".
const NT_GNU_BUILD_ID: u32 = 3;
/// Go's linker writes the build ID as a note of owner "Go" and this type
/// (`ELF_NOTE_GOBUILDID_TAG` in cmd/link).
const NT_GO_BUILD_ID: u32 = 4;

/// Where debug packages put files named by GNU build-id (`.build-id/xx/yyyy.debug`).
pub const SYSTEM_DEBUG_DIR: &str = "/usr/lib/debug";

/// The build IDs a Go ELF file carries in its notes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildIds {
    /// Go's build ID (`.note.go.buildid`), kept by `strip`.
    pub go: Option<String>,
    /// The GNU build-id (`.note.gnu.build-id`), in hex: the external linker (cgo) writes one,
    /// Go's own linker only when asked (`-ldflags=-B gobuildid` or `-B 0x…`).
    pub gnu: Option<String>,
}

impl BuildIds {
    pub(crate) fn read(elf: &ElfImage) -> BuildIds {
        let find = |section: &str, owner: &[u8], kind: u32| -> Option<Vec<u8>> {
            let data = elf.section_data_by_names(&[section]).ok()??;
            notes(data, elf.is_little_endian())
                .into_iter()
                .find(|n| n.owner == owner && n.kind == kind)
                .map(|n| n.desc.to_vec())
                .filter(|d| !d.is_empty())
        };
        BuildIds {
            go: find(".note.go.buildid", b"Go", NT_GO_BUILD_ID)
                .map(|d| String::from_utf8_lossy(&d).escape_debug().to_string()),
            gnu: find(".note.gnu.build-id", b"GNU", NT_GNU_BUILD_ID).map(|d| hex(&d)),
        }
    }

    /// `Go build ID abc/def, GNU build-id 0a1b…`, or `no build ID`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(go) = &self.go {
            parts.push(format!("Go build ID {go}"));
        }
        if let Some(gnu) = &self.gnu {
            parts.push(format!("GNU build-id {gnu}"));
        }
        if parts.is_empty() {
            "no build ID".to_owned()
        } else {
            parts.join(", ")
        }
    }

    /// Which ID proves `other` is the same build: every kind both carry must be equal, and at
    /// least one kind must be carried by both.
    fn matches(&self, other: &BuildIds) -> Result<IdKind, Mismatch> {
        let mut differences = Vec::new();
        let mut matched = None;
        for (kind, mine, theirs) in [
            (IdKind::Gnu, &self.gnu, &other.gnu),
            (IdKind::Go, &self.go, &other.go),
        ] {
            match (mine, theirs) {
                (Some(a), Some(b)) if a == b => matched = matched.or(Some(kind)),
                (Some(a), Some(b)) => differences.push(format!(
                    "the binary's {kind} is {a}, the debug file's is {b}"
                )),
                _ => {}
            }
        }
        match (differences.is_empty(), matched) {
            (true, Some(kind)) => Ok(kind),
            (true, None) => Err(Mismatch::NoCommonId),
            (false, _) => Err(Mismatch::Differ(differences.join("; "))),
        }
    }
}

enum Mismatch {
    NoCommonId,
    Differ(String),
}

/// The ID that proved a debug file is of the binary's build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdKind {
    Go,
    Gnu,
    /// Build IDs differ, but the function table and the code are proven equal: another link of
    /// the same compiled program.
    SameCode,
}

impl std::fmt::Display for IdKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IdKind::Go => "Go build ID",
            IdKind::Gnu => "GNU build-id",
            IdKind::SameCode => {
                "compiled code: another link, its function table and instructions equal"
            }
        })
    }
}

/// Where a binary's signatures, types and inlined-call locations come from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DebugSource {
    /// The binary's own DWARF.
    Dwarf,
    /// A separate debug file of the same build (`matched` says which ID proved it).
    DebugFile { path: PathBuf, matched: IdKind },
    /// No DWARF anywhere: names and probe sites only.
    None,
}

impl std::fmt::Display for DebugSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DebugSource::Dwarf => f.write_str("DWARF"),
            DebugSource::DebugFile { path, matched } => {
                write!(f, "debug file {} (same {matched})", path.display())
            }
            DebugSource::None => f.write_str("no DWARF"),
        }
    }
}

/// Why a debug file was not taken.
#[derive(Debug, thiserror::Error)]
pub enum DebugFileError {
    #[error(
        "{debug_file} is not from the same build as {binary}: {differences}; nor is it another link of the same code: {code} (a debug file must come from the same source built with the same toolchain and compiler flags: the unstripped build, or its DWARF kept with `objcopy --only-keep-debug`)"
    )]
    OtherBuild {
        binary: PathBuf,
        debug_file: PathBuf,
        differences: String,
        code: String,
    },
    #[error(
        "cannot prove {debug_file} is from the same build as {binary}: the binary has {binary_ids}, the debug file {debug_ids}, and no kind of build ID is in both"
    )]
    NoCommonId {
        binary: PathBuf,
        debug_file: PathBuf,
        binary_ids: String,
        debug_ids: String,
    },
    #[error("{debug_file} is built for {debug_arch}, {binary} for {binary_arch}")]
    Arch {
        binary: PathBuf,
        debug_file: PathBuf,
        binary_arch: &'static str,
        debug_arch: &'static str,
    },
    #[error("{debug_file} has no DWARF (no .debug_info section)")]
    NoDwarf { debug_file: PathBuf },
}

/// An opened debug file whose build IDs match the binary's, or whose code is proven the same.
pub(crate) struct DebugFile {
    pub(crate) path: PathBuf,
    pub(crate) elf: ElfImage,
    pub(crate) matched: IdKind,
    /// Set for another link of the same code: its data addresses are not the binary's.
    pub(crate) relinked: Option<Relinked>,
}

impl DebugFile {
    /// Opens `path` and checks it against the binary (`binary_path`, `binary_elf`, built by Go
    /// `1.minor` with Swiss maps or not, when its build info says).
    pub(crate) fn open(
        path: &Path,
        binary_path: &Path,
        binary_elf: &ElfImage,
        release: Option<(u32, bool)>,
    ) -> Result<DebugFile, crate::BinaryError> {
        let elf = ElfImage::parse(path, crate::map_file(path)?)?;
        let refuse = |e: DebugFileError| Err(crate::BinaryError::DebugFile(e));
        if elf.arch() != binary_elf.arch() {
            return refuse(DebugFileError::Arch {
                binary: binary_path.to_owned(),
                debug_file: path.to_owned(),
                binary_arch: binary_elf.arch().go_name(),
                debug_arch: elf.arch().go_name(),
            });
        }
        let (mine, theirs) = (BuildIds::read(binary_elf), BuildIds::read(&elf));
        let mut relinked = None;
        let matched = match mine.matches(&theirs) {
            Ok(kind) => kind,
            Err(Mismatch::Differ(differences)) => {
                let proof = match release {
                    Some((minor, swiss_maps)) => relink::prove(binary_elf, &elf, minor, swiss_maps),
                    None => Err("the binary's Go release is not in its build info".into()),
                };
                match proof {
                    Ok(proven) => {
                        relinked = Some(proven);
                        IdKind::SameCode
                    }
                    Err(code) => {
                        return refuse(DebugFileError::OtherBuild {
                            binary: binary_path.to_owned(),
                            debug_file: path.to_owned(),
                            differences,
                            code,
                        })
                    }
                }
            }
            Err(Mismatch::NoCommonId) => {
                return refuse(DebugFileError::NoCommonId {
                    binary: binary_path.to_owned(),
                    debug_file: path.to_owned(),
                    binary_ids: mine.describe(),
                    debug_ids: theirs.describe(),
                })
            }
        };
        if !has_dwarf(&elf) {
            return refuse(DebugFileError::NoDwarf {
                debug_file: path.to_owned(),
            });
        }
        Ok(DebugFile {
            path: path.to_owned(),
            elf,
            matched,
            relinked,
        })
    }
}

/// Whether the file has DWARF of its own (a `.debug_info` section, compressed or not).
pub(crate) fn has_dwarf(elf: &ElfImage) -> bool {
    elf.section_address(".debug_info").is_some()
}

/// Where to look for a debug file, in order, for a binary with these IDs and file name: in
/// each of `dirs` (`GOTRACE_DEBUG_PATH`), `.build-id/xx/yyyy.debug` (GNU build-id), then
/// `NAME.debug`, then `NAME` (the unstripped build kept under the same name); last,
/// `/usr/lib/debug/.build-id/xx/yyyy.debug`.
pub fn candidates(ids: &BuildIds, file_name: Option<&OsStr>, dirs: &[PathBuf]) -> Vec<PathBuf> {
    let by_id = |dir: &Path| {
        let gnu = ids.gnu.as_deref().filter(|h| h.len() > 2)?;
        let (head, rest) = gnu.split_at(2);
        Some(
            dir.join(".build-id")
                .join(head)
                .join(format!("{rest}.debug")),
        )
    };
    let mut out = Vec::new();
    for dir in dirs.iter().filter(|d| !d.as_os_str().is_empty()) {
        out.extend(by_id(dir));
        if let Some(name) = file_name {
            let mut with_suffix = name.to_owned();
            with_suffix.push(".debug");
            out.push(dir.join(with_suffix));
            out.push(dir.join(name));
        }
    }
    out.extend(by_id(Path::new(SYSTEM_DEBUG_DIR)));
    out
}

/// One ELF note: owner name (without its NUL), type and descriptor.
#[derive(Debug, PartialEq, Eq)]
struct Note<'a> {
    owner: &'a [u8],
    kind: u32,
    desc: &'a [u8],
}

/// The notes of a `SHT_NOTE` section, up to the first one that does not fit (a damaged note
/// ends the list rather than being guessed at).
fn notes(data: &[u8], little_endian: bool) -> Vec<Note<'_>> {
    let word = |at: usize| -> Option<u32> {
        let bytes: [u8; 4] = data.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if little_endian {
            u32::from_le_bytes(bytes)
        } else {
            u32::from_be_bytes(bytes)
        })
    };
    let align = |n: usize| n.checked_add(3).map(|n| n & !3);
    let mut out = Vec::new();
    let mut at = 0usize;
    while let (Some(namesz), Some(descsz), Some(kind)) = (word(at), word(at + 4), word(at + 8)) {
        let next = (|| {
            let name_at = at + 12;
            let name_end = name_at.checked_add(namesz as usize)?;
            let desc_at = name_at.checked_add(align(namesz as usize)?)?;
            let desc_end = desc_at.checked_add(descsz as usize)?;
            let mut owner = data.get(name_at..name_end)?;
            let desc = data.get(desc_at..desc_end)?;
            while let Some(shorter) = owner.strip_suffix(b"\0") {
                owner = shorter;
            }
            out.push(Note { owner, kind, desc });
            desc_at.checked_add(align(descsz as usize)?)
        })();
        match next {
            Some(n) => at = n,
            None => break,
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A note as a linker lays it out: little-endian words, name and descriptor padded to 4.
    fn note(owner: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend((owner.len() as u32 + 1).to_le_bytes());
        out.extend((desc.len() as u32).to_le_bytes());
        out.extend(kind.to_le_bytes());
        out.extend(owner);
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend(desc);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out
    }

    // Recorded from `readelf -x .note.go.buildid` of the values fixture built by Go 1.21: namesz
    // 4 ("Go\0\0"), descsz 0x53, type 4, then the ID.
    const GO_NOTE: &[u8] = b"\x04\x00\x00\x00\x53\x00\x00\x00\x04\x00\x00\x00Go\x00\x00\
-2m7s6iHUtD_PgsynIIL/YdeCNs63niwVNq7WEACR/fgQjn8x72oMkYotD1nxh/I8SYtV5vuLTe-KPWnKp7\x00";

    #[test]
    fn reads_go_build_id_note() {
        let found = notes(GO_NOTE, true);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].owner, b"Go");
        assert_eq!(found[0].kind, NT_GO_BUILD_ID);
        assert_eq!(
            found[0].desc,
            b"-2m7s6iHUtD_PgsynIIL/YdeCNs63niwVNq7WEACR/fgQjn8x72oMkYotD1nxh/I8SYtV5vuLTe-KPWnKp7"
        );
    }

    #[test]
    fn reads_several_notes_with_padding() {
        let id = [0x85, 0x67, 0x48, 0x79, 0x4c];
        let mut data = note(b"GNU", 1, &[0, 0, 0, 0, 2, 6, 0, 0, 0, 0]);
        data.extend(note(b"GNU", NT_GNU_BUILD_ID, &id));
        let found = notes(&data, true);
        assert_eq!(found.len(), 2);
        assert_eq!(found[1].owner, b"GNU");
        assert_eq!(found[1].kind, NT_GNU_BUILD_ID);
        assert_eq!(found[1].desc, id);
        assert_eq!(hex(found[1].desc), "856748794c");
    }

    #[test]
    fn big_endian_words() {
        let mut data = Vec::new();
        data.extend(4u32.to_be_bytes());
        data.extend(2u32.to_be_bytes());
        data.extend(NT_GNU_BUILD_ID.to_be_bytes());
        data.extend(b"GNU\0\xab\xcd\0\0");
        let found = notes(&data, false);
        assert_eq!(
            found,
            vec![Note {
                owner: b"GNU",
                kind: NT_GNU_BUILD_ID,
                desc: &[0xab, 0xcd]
            }]
        );
    }

    #[test]
    fn damaged_notes_end_the_list() {
        // A descriptor claiming more bytes than there are: the good note before it is kept.
        let mut data = note(b"Go", NT_GO_BUILD_ID, b"abc/def");
        data.extend(4u32.to_le_bytes());
        data.extend(0xffff_fff0u32.to_le_bytes());
        data.extend(3u32.to_le_bytes());
        data.extend(b"GNU\0");
        let found = notes(&data, true);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].desc, b"abc/def");
        assert!(notes(&[1, 2, 3], true).is_empty());
        assert!(notes(&[], true).is_empty());
        // namesz near u32::MAX must not overflow.
        let mut huge = Vec::new();
        huge.extend(u32::MAX.to_le_bytes());
        huge.extend(0u32.to_le_bytes());
        huge.extend(4u32.to_le_bytes());
        assert!(notes(&huge, true).is_empty());
    }

    fn ids(go: Option<&str>, gnu: Option<&str>) -> BuildIds {
        BuildIds {
            go: go.map(str::to_owned),
            gnu: gnu.map(str::to_owned),
        }
    }

    #[test]
    fn same_build_needs_a_shared_equal_id_and_no_different_one() {
        let a = ids(Some("a/b/c/d"), Some("0a0b"));
        assert_eq!(a.matches(&a.clone()).ok(), Some(IdKind::Gnu));
        assert_eq!(
            ids(Some("a/b/c/d"), None)
                .matches(&ids(Some("a/b/c/d"), Some("0a0b")))
                .ok(),
            Some(IdKind::Go)
        );
        match a.matches(&ids(Some("a/b/c/e"), Some("0a0b"))) {
            Err(Mismatch::Differ(text)) => assert_eq!(
                text,
                "the binary's Go build ID is a/b/c/d, the debug file's is a/b/c/e"
            ),
            _ => panic!("a different Go build ID must be refused"),
        }
        assert!(matches!(
            ids(Some("x"), None).matches(&ids(None, Some("0a0b"))),
            Err(Mismatch::NoCommonId)
        ));
        assert!(matches!(
            ids(None, None).matches(&ids(None, None)),
            Err(Mismatch::NoCommonId)
        ));
        assert_eq!(
            ids(Some("a/b"), Some("0a0b")).describe(),
            "Go build ID a/b, GNU build-id 0a0b"
        );
        assert_eq!(ids(None, None).describe(), "no build ID");
    }

    #[test]
    fn lookup_order() {
        let dirs = [PathBuf::from("/d1"), PathBuf::new(), PathBuf::from("/d2")];
        let with_gnu = ids(Some("x"), Some("85674879"));
        let found = candidates(&with_gnu, Some(OsStr::new("app")), &dirs);
        let expected: Vec<PathBuf> = [
            "/d1/.build-id/85/674879.debug",
            "/d1/app.debug",
            "/d1/app",
            "/d2/.build-id/85/674879.debug",
            "/d2/app.debug",
            "/d2/app",
            "/usr/lib/debug/.build-id/85/674879.debug",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(found, expected);
        let go_only = ids(Some("x"), None);
        assert!(candidates(&go_only, Some(OsStr::new("app")), &[]).is_empty());
        assert_eq!(
            candidates(&go_only, None, &[PathBuf::from("/d")]),
            Vec::<PathBuf>::new()
        );
    }
}
