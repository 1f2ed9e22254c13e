//! The watch on the traced file, against the real kernel: an exec of a file written in place
//! waits until the session says its probes are gone; a new file at the path is reported.

use gotrace_kernel::{BinaryWatch, FileChange};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A copy of /bin/true in a fresh directory, watched as if probes were attached to it.
fn watched_program(tag: &str) -> (PathBuf, PathBuf, BinaryWatch) {
    let dir = tempfile_dir(tag);
    let path = executable_copy(&dir);
    let watch = BinaryWatch::start(&path).expect("watch");
    watch.attached(&std::fs::metadata(&path).expect("stat"));
    (dir, path, watch)
}

fn executable_copy(dir: &Path) -> PathBuf {
    let path = dir.join("prog");
    std::fs::copy("/bin/true", &path).expect("copying /bin/true");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn wait_for(watch: &BinaryWatch, want: FileChange) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if watch.take().contains(&want) {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("no {want:?} within 5 s");
}

fn root_exec_of_a_file_written_in_place_waits_for_the_detach() {
    let (dir, path, watch) = watched_program("inplace");

    // Unchanged: exec runs at once.
    let ok = std::process::Command::new(&path).status().expect("exec");
    assert!(ok.success());
    assert!(
        watch.take().is_empty(),
        "no change reported for a plain exec"
    );

    // Written in place (same inode): reported at once.
    let bytes = std::fs::read("/bin/true").expect("read");
    std::fs::write(&path, &bytes).expect("write in place");
    wait_for(&watch, FileChange::WrittenInPlace);
    watch.detached();

    // The write completed: the path holds a whole file again.
    wait_for(&watch, FileChange::Replaced);
    watch.attached(&std::fs::metadata(&path).expect("stat"));

    // Changed again behind the watch's back (ctime moves): an exec is held until detached().
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open for write");
    file.set_len(bytes.len() as u64)
        .expect("truncate to same size");
    drop(file);
    let _ = watch.take();
    let held_path = path.clone();
    let exec = std::thread::spawn(move || {
        let start = Instant::now();
        let status = std::process::Command::new(&held_path).status();
        (
            status.map(|s| s.success()).unwrap_or(false),
            start.elapsed(),
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(!exec.is_finished(), "the exec must wait for the detach");
    watch.detached();
    let (ran, waited) = exec.join().expect("exec thread");
    assert!(ran, "the exec goes on after the detach");
    assert!(waited >= Duration::from_millis(300), "held {waited:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn root_a_new_file_at_the_path_is_reported_replaced() {
    let (dir, path, watch) = watched_program("replace");
    let fresh = dir.join("prog.new");
    std::fs::copy("/bin/true", &fresh).expect("copy");
    std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::rename(&fresh, &path).expect("rename over");
    wait_for(&watch, FileChange::Replaced);
    // The probes are on the old inode; the new one has none, so its exec is not held.
    let start = Instant::now();
    assert!(std::process::Command::new(&path)
        .status()
        .expect("exec")
        .success());
    assert!(start.elapsed() < Duration::from_secs(1));
    assert!(!watch.take().contains(&FileChange::WrittenInPlace));
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gotrace-watch-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

gotrace_gobuild::test_main! {
    tests: [],
    root: [
        root_exec_of_a_file_written_in_place_waits_for_the_detach,
        root_a_new_file_at_the_path_is_reported_replaced,
    ],
}
