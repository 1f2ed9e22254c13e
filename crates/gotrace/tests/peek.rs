//! `gotrace peek`: the breakpoint mechanism made visible. While probed, every site reads 0xcc
//! (int3) in the live process; after detaching, the file's original bytes are back.

mod common;

use common::*;
use std::process::Output;

/// `gotrace peek FLAGS --pid PID main.Fibonacci` on a running service; it must succeed.
fn peek(service: &Running, flags: &[&str]) -> Output {
    let pid = service.pid().to_string();
    let out = run_gotrace(&[&["peek"], flags, &["--pid", &pid, "main.Fibonacci"]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn root_peek_shows_int3_while_attached_and_original_bytes_after() {
    let (service, addr) = start_fibonacci_service(&newest_toolchain());
    let out = peek(&service, &["--json"]);
    let sites = peek_sites(&out.stdout);
    assert!(
        sites.len() >= 2,
        "an entry and at least one return: {sites:?}"
    );
    assert_eq!(sites.iter().filter(|s| s["kind"] == "entry").count(), 1);
    assert!(sites
        .iter()
        .any(|s| s["kind"] == "return" && s["file"]["asm"] == "ret"));
    for site in &sites {
        let file = site["file"]["bytes"].as_str().unwrap();
        let probed = site["probed"]["bytes"].as_str().unwrap();
        let detached = site["detached"]["bytes"].as_str().unwrap();
        assert!(
            probed.starts_with("cc"),
            "not a breakpoint while attached: {site}"
        );
        assert_eq!(site["probed"]["asm"], "int3", "{site}");
        assert!(!file.starts_with("cc"), "{site}");
        assert_eq!(detached, file, "original bytes not restored: {site}");
        // Only the first byte changes.
        assert_eq!(probed[2..], file[2..], "{site}");
    }
    // The service is unharmed and still right.
    let (status, body) = http_get(addr, "/fibonacci?num=10");
    assert_eq!((status, ret_of(&body)), (200, 55));
}

fn root_peek_text_explains_what_the_user_sees() {
    let (service, _addr) = start_fibonacci_service(&newest_toolchain());
    let out = peek(&service, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("int3"), "{text}");
    assert!(text.contains("0xcc"), "{text}");
    assert!(text.contains("original bytes are back"), "{text}");
}

gotrace_gobuild::test_main! {
    tests: [],
    root: [
        root_peek_shows_int3_while_attached_and_original_bytes_after,
        root_peek_text_explains_what_the_user_sees,
    ],
}
