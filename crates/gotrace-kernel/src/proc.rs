//! Reading target processes through procfs: existence, executable, memory, mappings.

use crate::KernelError;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

pub fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The process (thread group) that `pid` belongs to: itself for a process, its process for a
/// thread id. A zombie is refused: it has exited, only its exit status is left.
pub fn process_of(pid: u32) -> Result<u32, KernelError> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => KernelError::NoSuchProcess(pid),
        _ => KernelError::io(format!("reading {path}"))(e),
    })?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    if field("State:").is_some_and(|s| s.starts_with('Z')) {
        return Err(KernelError::Zombie(pid));
    }
    field("Tgid:").and_then(|t| t.parse().ok()).ok_or_else(|| {
        KernelError::io(format!("reading {path}"))(std::io::ErrorKind::InvalidData.into())
    })
}

/// The executable of a running process, as a path the kernel resolves to its inode even if the
/// file was since replaced or deleted.
pub fn exe(pid: u32) -> Result<PathBuf, KernelError> {
    let link = PathBuf::from(format!("/proc/{pid}/exe"));
    fs::metadata(&link).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => KernelError::NoSuchProcess(pid),
        _ => KernelError::io(format!("reading {}", link.display()))(e),
    })?;
    Ok(link)
}

/// Reads `len` bytes at `addr` in the process's address space.
pub fn read_memory(pid: u32, addr: u64, len: usize) -> Result<Vec<u8>, KernelError> {
    let path = format!("/proc/{pid}/mem");
    let file = fs::File::open(&path).map_err(KernelError::io(format!("opening {path}")))?;
    let mut buf = vec![0; len];
    file.read_exact_at(&mut buf, addr)
        .map_err(KernelError::io(format!(
            "reading {len} bytes at {addr:#x} of {path}"
        )))?;
    Ok(buf)
}

/// Where file offset `offset` of `binary` is mapped in the process, if it is.
pub fn runtime_address(pid: u32, binary: &Path, offset: u64) -> Result<Option<u64>, KernelError> {
    let meta =
        fs::metadata(binary).map_err(KernelError::io(format!("reading {}", binary.display())))?;
    let maps_path = format!("/proc/{pid}/maps");
    let maps =
        fs::read_to_string(&maps_path).map_err(KernelError::io(format!("reading {maps_path}")))?;
    for line in maps.lines() {
        let Some(mapping) = Mapping::parse(line) else {
            continue;
        };
        let dev = (
            u64::from(libc::major(meta.dev())),
            u64::from(libc::minor(meta.dev())),
        );
        if mapping.inode != meta.ino() || mapping.dev != dev {
            continue;
        }
        if offset >= mapping.file_offset
            && offset < mapping.file_offset + (mapping.end - mapping.start)
        {
            return Ok(Some(mapping.start + (offset - mapping.file_offset)));
        }
    }
    Ok(None)
}

struct Mapping {
    start: u64,
    end: u64,
    file_offset: u64,
    dev: (u64, u64),
    inode: u64,
}

impl Mapping {
    /// `start-end perms offset major:minor inode path`
    fn parse(line: &str) -> Option<Mapping> {
        let mut fields = line.split_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let _perms = fields.next()?;
        let offset = fields.next()?;
        let (major, minor) = fields.next()?.split_once(':')?;
        let inode = fields.next()?.parse().ok()?;
        Some(Mapping {
            start: u64::from_str_radix(start, 16).ok()?,
            end: u64::from_str_radix(end, 16).ok()?,
            file_offset: u64::from_str_radix(offset, 16).ok()?,
            dev: (
                u64::from_str_radix(major, 16).ok()?,
                u64::from_str_radix(minor, 16).ok()?,
            ),
            inode,
        })
    }
}
