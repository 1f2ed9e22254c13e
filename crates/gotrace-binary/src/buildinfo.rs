//! `.go.buildinfo`: the Go version and module the binary was built from.
//!
//! The layout follows Go's `src/debug/buildinfo`: a 32-byte header starting with the magic
//! `\xff Go buildinf:`, then the pointer size and a flags byte. Since Go 1.18 (flag bit 2) two
//! uvarint-length-prefixed strings follow the header: the Go version and the module info. Older
//! binaries hold two pointers to Go string headers elsewhere in the image instead.

use crate::elf::ElfImage;
use crate::{BinaryError, VirtAddr};

const SECTION: &str = ".go.buildinfo";
const MAGIC: &[u8] = b"\xff Go buildinf:";
const HEADER_LEN: usize = 32;
/// Flag bit: the strings follow the header instead of being pointed to.
const FLAG_INLINE: u8 = 2;
/// Flag bit: big-endian pointers (no target we read).
const FLAG_BIG_ENDIAN: u8 = 1;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BuildInfo {
    /// As the toolchain states it: `go1.23.5`.
    pub go_version: String,
    /// Path of the main module; `None` for a GOPATH-mode build.
    pub main_module: Option<String>,
    /// The `GOARCH` build setting; `None` before Go 1.18, which recorded no settings.
    pub goarch: Option<String>,
    /// Every `build` line of the module info, in order: (`GOARCH`, `amd64`),
    /// (`-ldflags`, `-s -w`), ...
    pub settings: Vec<(String, String)>,
}

impl BuildInfo {
    /// 23 for `go1.23.5`.
    pub fn go_version_minor(&self) -> Option<u32> {
        let rest = self.go_version.strip_prefix("go1.")?;
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    }

    /// The value of a build setting such as `CGO_ENABLED`.
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the `.go.buildinfo` section of `elf`.
pub fn parse(section: &[u8], elf: &ElfImage) -> Result<BuildInfo, BinaryError> {
    parse_blob(section, |addr, len| elf.bytes_at(VirtAddr(addr), len).ok())
}

/// Parses a build-info section. `read(addr, len)` returns the image's bytes at a virtual
/// address; only binaries older than Go 1.18, whose header points at its strings, need it.
pub fn parse_blob<'a>(
    section: &[u8],
    read: impl Fn(u64, u64) -> Option<&'a [u8]>,
) -> Result<BuildInfo, BinaryError> {
    // The linker aligns the blob to 16 bytes; it normally opens the section.
    let start = (0..section.len())
        .step_by(16)
        .find(|&i| section[i..].starts_with(MAGIC))
        .ok_or_else(|| malformed(0, "no build-info magic"))?;
    let blob = &section[start..];
    let header = blob
        .get(..HEADER_LEN)
        .ok_or_else(|| malformed(start, "header is cut short"))?;
    let ptr_size = header[14];
    let flags = header[15];
    let (go_version, modinfo) = if flags & FLAG_INLINE != 0 {
        let (version, rest) = uvarint_string(blob, HEADER_LEN, start)?;
        let (modinfo, _) = uvarint_string(blob, rest, start)?;
        (version, modinfo)
    } else {
        if flags & FLAG_BIG_ENDIAN != 0 {
            return Err(malformed(start + 15, "big-endian build info"));
        }
        if ptr_size != 8 && ptr_size != 4 {
            return Err(malformed(start + 14, format!("pointer size {ptr_size}")));
        }
        let ptr_size = usize::from(ptr_size);
        let version_ptr = le_word(&header[16..16 + ptr_size]);
        let modinfo_ptr = le_word(&header[16 + ptr_size..16 + 2 * ptr_size]);
        (
            pointed_string(&read, version_ptr, ptr_size, start + 16)?,
            pointed_string(&read, modinfo_ptr, ptr_size, start + 16 + ptr_size)?,
        )
    };
    if go_version.is_empty() {
        return Err(malformed(start, "empty Go version"));
    }
    let go_version = String::from_utf8_lossy(go_version).into_owned();
    Ok(from_modinfo(go_version, &strip_framing(modinfo)))
}

/// cmd/go wraps the module info in two 16-byte sentinels (not UTF-8, so they go before the
/// text is decoded); anything else is not module info.
fn strip_framing(b: &[u8]) -> String {
    if b.len() >= 33 && b[b.len() - 17] == b'\n' {
        String::from_utf8_lossy(&b[16..b.len() - 16]).into_owned()
    } else {
        String::new()
    }
}

/// Reads the lines of `runtime/debug.BuildInfo`'s text form that matter here.
fn from_modinfo(go_version: String, modinfo: &str) -> BuildInfo {
    let mut main_module = None;
    let mut settings = Vec::new();
    for line in modinfo.lines() {
        let mut fields = line.splitn(2, '\t');
        match (fields.next(), fields.next()) {
            (Some("mod"), Some(rest)) => {
                main_module = rest.split('\t').next().map(str::to_owned);
            }
            (Some("build"), Some(kv)) => {
                if let Some((key, value)) = kv.split_once('=') {
                    settings.push((key.to_owned(), unquote(value)));
                }
            }
            _ => {}
        }
    }
    let mut info = BuildInfo {
        go_version,
        main_module,
        goarch: None,
        settings,
    };
    info.goarch = info.setting("GOARCH").map(str::to_owned);
    info
}

/// cmd/go quotes values holding spaces or quotes with `strconv.Quote` (`-ldflags="-s -w"`).
/// Undoes the escapes such values use; anything unexpected is kept as written.
fn unquote(value: &str) -> String {
    if let Some(inner) = value.strip_prefix('`').and_then(|v| v.strip_suffix('`')) {
        return inner.to_owned();
    }
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return value.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(other @ ('\\' | '"')) => out.push(other),
            _ => return value.to_owned(),
        }
    }
    out
}

/// A uvarint length and that many bytes, at `off` in `blob`; returns the bytes and the offset
/// after them.
fn uvarint_string(blob: &[u8], off: usize, base: usize) -> Result<(&[u8], usize), BinaryError> {
    let mut len: u64 = 0;
    let mut at = off;
    for shift in (0..64).step_by(7) {
        let b = *blob
            .get(at)
            .ok_or_else(|| malformed(base + at, "string length is cut short"))?;
        at += 1;
        len |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            let bytes = usize::try_from(len)
                .ok()
                .and_then(|len| blob.get(at..at.checked_add(len)?))
                .ok_or_else(|| {
                    malformed(
                        base + off,
                        format!("string of {len} bytes runs past the end"),
                    )
                })?;
            return Ok((bytes, at + bytes.len()));
        }
    }
    Err(malformed(base + off, "string length varint is too long"))
}

/// The bytes of the Go string whose header (pointer, length) is at `addr` in the image.
fn pointed_string<'a>(
    read: &impl Fn(u64, u64) -> Option<&'a [u8]>,
    addr: u64,
    ptr_size: usize,
    offset: usize,
) -> Result<&'a [u8], BinaryError> {
    let unreadable = || malformed(offset, format!("cannot read the string at {addr:#x}"));
    let header = read(addr, 2 * ptr_size as u64).ok_or_else(unreadable)?;
    let data = le_word(header.get(..ptr_size).ok_or_else(unreadable)?);
    let len = le_word(header.get(ptr_size..2 * ptr_size).ok_or_else(unreadable)?);
    if len == 0 {
        return Ok(&[]);
    }
    read(data, len).ok_or_else(unreadable)
}

/// A little-endian word of 4 or 8 bytes.
fn le_word(b: &[u8]) -> u64 {
    b.iter()
        .rev()
        .fold(0u64, |acc, &byte| (acc << 8) | u64::from(byte))
}

fn malformed(offset: usize, reason: impl Into<String>) -> BinaryError {
    BinaryError::Malformed {
        section: SECTION,
        offset: offset as u64,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Module info framed as cmd/go frames it: the sentinels are not valid UTF-8.
    fn framed(modinfo: &str) -> Vec<u8> {
        let start = b"0w\xaf\x0c\x92t\x08\x02A\xe1\xc1\x07\xe6\xd6\x18\xe6";
        let end = b"\xf92C1\x86\x18 r\x00\x82B\x10A\x16\xd8\xf2";
        [&start[..], modinfo.as_bytes(), b"\n", &end[..]].concat()
    }

    fn header(ptr_size: u8, flags: u8) -> Vec<u8> {
        let mut h = MAGIC.to_vec();
        h.push(ptr_size);
        h.push(flags);
        h.resize(HEADER_LEN, 0);
        h
    }

    #[test]
    fn inline_format_with_module_and_quoted_setting() {
        let modinfo = framed(
            "path\texample.com/m\nmod\texample.com/m\t(devel)\t\nbuild\t-ldflags=\"-s -w\"\nbuild\tGOARCH=arm64",
        );
        let mut blob = header(8, FLAG_INLINE);
        for s in [&b"go1.22.1"[..], &modinfo] {
            blob.push(s.len() as u8);
            blob.extend_from_slice(s);
        }
        let info = parse_blob(&blob, |_, _| None).unwrap();
        assert_eq!(info.go_version, "go1.22.1");
        assert_eq!(info.go_version_minor(), Some(22));
        assert_eq!(info.main_module.as_deref(), Some("example.com/m"));
        assert_eq!(info.goarch.as_deref(), Some("arm64"));
        assert_eq!(info.setting("-ldflags"), Some("-s -w"));
    }

    /// Go 1.17 and older: the header points at string headers elsewhere in the image.
    #[test]
    fn pointer_format_reads_through_the_image() {
        let mut blob = header(8, 0);
        blob[16..24].copy_from_slice(&0x1000u64.to_le_bytes());
        blob[24..32].copy_from_slice(&0x1010u64.to_le_bytes());
        let modinfo = framed("path\tcmd/x\nmod\tcmd/x\t(devel)\t");
        let mut image = vec![0u8; 0x1100];
        image[0x1000..0x1008].copy_from_slice(&0x1020u64.to_le_bytes());
        image[0x1008..0x1010].copy_from_slice(&8u64.to_le_bytes());
        image[0x1010..0x1018].copy_from_slice(&0x1030u64.to_le_bytes());
        image[0x1018..0x1020].copy_from_slice(&(modinfo.len() as u64).to_le_bytes());
        image[0x1020..0x1028].copy_from_slice(b"go1.17.3");
        image[0x1030..0x1030 + modinfo.len()].copy_from_slice(&modinfo);
        let read = |addr: u64, len: u64| image.get(addr as usize..(addr + len) as usize);
        let info = parse_blob(&blob, read).unwrap();
        assert_eq!(info.go_version, "go1.17.3");
        assert_eq!(info.main_module.as_deref(), Some("cmd/x"));
        assert_eq!(info.goarch, None);
    }

    #[test]
    fn missing_magic_and_short_strings_are_errors() {
        assert!(parse_blob(b"not build info at all, not at all", |_, _| None).is_err());
        let mut blob = header(8, FLAG_INLINE);
        blob.push(200);
        blob.extend_from_slice(b"go1.2");
        assert!(parse_blob(&blob, |_, _| None).is_err());
    }
}
