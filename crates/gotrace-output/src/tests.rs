//! Each record, as text and as a JSON line.

use crate::funcs::{BinaryInfo, EntryInfo, Listed, ListedValue, Place, RegPiece, Sites};
use crate::peek::{Peek, PeekedSite, Snapshot};
use crate::*;
use gotrace_binary::{DebugSource, FunctionSource, VirtAddr};
use gotrace_plan::SiteKind;

/// The record as text, and as JSON lines parsed.
fn both(record: Record<'_>) -> (String, Vec<serde_json::Value>) {
    let mut text = Printer::new(Vec::new(), Format::Text, Clock::default());
    let mut json = Printer::new(Vec::new(), Format::Json, Clock::default());
    text.record(&record).unwrap();
    json.record(&record).unwrap();
    let text = String::from_utf8(text.into_inner()).unwrap();
    let json = String::from_utf8(json.into_inner()).unwrap();
    assert!(json.ends_with('\n'), "{json}");
    let lines = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    (text, lines)
}

fn one(record: Record<'_>) -> (String, serde_json::Value) {
    let (text, mut lines) = both(record);
    assert_eq!(lines.len(), 1, "{lines:?}");
    (text, lines.remove(0))
}

fn attached() -> Attached {
    Attached {
        binary: "/srv/app".into(),
        functions: vec!["main.Fibonacci".into()],
        sites: 3,
        entry_sites: 1,
        return_sites: 2,
        runtime_hooks: 4,
        elapsed_ns: 1_200_000,
        ..Attached::default()
    }
}

#[test]
fn attached_says_what_is_traced() {
    let (text, v) = one(Record::Attached(&attached()));
    assert!(
        text.starts_with("gotrace: tracing main.Fibonacci in /srv/app (3 sites: 1 entry, 2 return, 0 inlined, 4 runtime; one uprobe_multi link, attached in 1.2ms"),
        "{text}"
    );
    assert!(text.ends_with(" — Ctrl-C to stop\n"), "{text}");
    assert_eq!(v["type"], "attached");
    assert_eq!(v["functions"], serde_json::json!(["main.Fibonacci"]));
    assert_eq!(
        (v["sites"].as_u64(), v["return_sites"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(v["method"], "uprobe_multi");
    assert_eq!(v["elapsed_ns"], 1_200_000);
}

#[test]
fn attached_names_refusals_and_notes_inlined_calls() {
    let refused = |function: &str, category: &str, instruction| Refused {
        function: function.into(),
        category: category.into(),
        reason: "why".into(),
        instruction,
    };
    let record = Attached {
        functions: vec!["main.Add".into(), "main.Mul".into()],
        inlined: vec![InlinedCopies {
            function: "main.Add".into(),
            copies: 1,
            inlined_sites: 3,
        }],
        refused: vec![
            refused("main.asm", "assembly", false),
            refused("main.odd", "instruction the kernel cannot probe", true),
        ],
        ..attached()
    };
    let (text, v) = one(Record::Attached(&record));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "gotrace: not tracing 2 matched functions that cannot bear a probe: 1 assembly, 1 instruction the kernel cannot probe (instruction: main.odd); `gotrace funcs -v` says why for each"
    );
    assert!(
        lines[1].starts_with("gotrace: note: an inlined call"),
        "{text}"
    );
    assert!(
        lines[2].starts_with(
            "gotrace: tracing 2 functions in /srv/app (main.Add: 1 copy, 3 inlined sites; "
        ),
        "{text}"
    );
    assert_eq!(v["refused"][1]["function"], "main.odd");
    assert_eq!(v["refused"][1]["instruction"], true);
    assert_eq!(v["inlined"][0]["inlined_sites"], 3);
    let single = Attached {
        refused: vec![refused("main.asm", "assembly", false)],
        ..attached()
    };
    let (text, _) = one(Record::Attached(&single));
    assert!(
        text.starts_with("gotrace: not tracing main.asm: why\n"),
        "{text}"
    );
}

#[test]
fn warnings_and_notes() {
    let (text, v) = one(Record::Warning(&Warning::new("something odd")));
    assert_eq!(text, "gotrace: warning: something odd\n");
    assert_eq!(
        v,
        serde_json::json!({"type": "warning", "message": "something odd"})
    );
    let site = Warning::site_not_attached(FailedSite {
        function: "main.F".into(),
        kind: "return".into(),
        addr: "0x4a0010".into(),
        reason: "EINVAL".into(),
    });
    let (text, v) = one(Record::Warning(&site));
    assert_eq!(
        text,
        "gotrace: warning: could not attach the return probe main.F at 0x4a0010: EINVAL\n"
    );
    assert_eq!(v["site"]["function"], "main.F");
    assert_eq!(v["site"]["addr"], "0x4a0010");
    let note = Note {
        message: "process 42 exited".into(),
    };
    let (text, v) = one(Record::Note(&note));
    assert_eq!(text, "gotrace: process 42 exited\n");
    assert_eq!(
        v,
        serde_json::json!({"type": "note", "message": "process 42 exited"})
    );
}

#[test]
fn losses_name_their_cause_as_the_summary_does() {
    let lost = Lost {
        cause: LossCause::LostRingFull,
        calls: 12,
    };
    let (text, v) = one(Record::Lost(&lost));
    assert!(
        text.starts_with("gotrace: 12 calls lost so far: the ring buffer was full"),
        "{text}"
    );
    assert_eq!(
        v,
        serde_json::json!({"type": "lost", "cause": "lost_ring_full", "calls": 12})
    );
    for cause in [
        LossCause::LostRingFull,
        LossCause::InflightFull,
        LossCause::ReadFailures,
        LossCause::LostBusy,
        LossCause::SpansNotExported,
    ] {
        let (_, v) = one(Record::Lost(&Lost { cause, calls: 1 }));
        let summary = serde_json::to_value(Summary::default()).unwrap();
        let name = v["cause"].as_str().unwrap();
        assert!(summary.get(name).is_some(), "{name} is not a summary field");
    }
}

#[test]
fn summary_as_json_has_totals_and_reads_back() {
    let summary = Summary {
        calls: 10,
        unreturned: 3,
        panicked: 3,
        lost_ring_full: 4,
        sites_attached: 6,
        ..Summary::default()
    };
    let (text, v) = one(Record::Summary(&summary));
    assert_eq!(text, summary.text() + "\n");
    assert_eq!(v["type"], "summary");
    assert_eq!(
        (v["calls"].as_u64(), v["calls_traced"].as_u64()),
        (Some(10), Some(13))
    );
    assert_eq!(v["calls_lost"], 4);
    let back: Summary = serde_json::from_value(v).unwrap();
    assert_eq!(
        (back.calls, back.lost_ring_full, back.sites_attached),
        (10, 4, 6)
    );
}

#[test]
fn a_call_line_says_its_type_first() {
    let call = gotrace_decode::DecodedCall {
        function: "main.F",
        outcome: gotrace_plan::CallKind::Returned,
        args: Some(Vec::new()),
        results: Some(Vec::new()),
        ..Default::default()
    };
    let mut json = Printer::new(Vec::new(), Format::Json, Clock::default());
    json.record(&Record::Call(&call)).unwrap();
    assert!(json.into_inner().starts_with(br#"{"type":"call","ts":"#));
}

fn listed(detail: bool) -> Listed {
    let value = |name: &str, reg: &str| ListedValue {
        name: name.into(),
        ty: "int".into(),
        size: 8,
        location: Some(Place::Registers {
            pieces: vec![RegPiece {
                reg: reg.into(),
                value_offset: 0,
                size: 8,
            }],
        }),
    };
    Listed {
        name: "main.F".into(),
        entry: "0x48fca0".into(),
        end: "0x48fcc0".into(),
        size: 32,
        signature: Some("func(n int) (~r0 int)".into()),
        abi0: false,
        params: Some(vec![value("n", "RAX")]),
        results: Some(vec![value("~r0", "RAX")]),
        locations_error: None,
        sites: Some(Sites {
            entry: EntryInfo {
                addr: "0x48fca0".into(),
                offset: 0,
                stack_check: None,
                may_restart: false,
            },
            returns: Vec::new(),
            deferreturns: Vec::new(),
        }),
        sites_error: None,
        refused: None,
        inlined: Vec::new(),
        source: gotrace_plan::SignatureSource::Dwarf,
        untyped: None,
        detail,
    }
}

#[test]
fn funcs_records() {
    let info = BinaryInfo {
        go_version: Some("go1.23.5".into()),
        goarch: "amd64",
        pie: true,
        cgo: Some(false),
        function_source: FunctionSource::Symtab,
        dwarf: true,
        dwarf_error: None,
        debug_source: DebugSource::Dwarf,
    };
    let (text, v) = one(Record::Binary(&info));
    assert_eq!(
        text,
        "gotrace: go1.23.5 amd64 (PIE); functions from .symtab; signatures from DWARF\n"
    );
    assert_eq!(v["type"], "binary");
    assert_eq!(v["function_source"], "symtab");
    let (text, v) = one(Record::Function(&listed(false)));
    assert_eq!(text, "0x48fca0   main.F(n int) (~r0 int)\n");
    assert_eq!(v["type"], "function");
    assert_eq!(v["params"][0]["location"]["pieces"][0]["reg"], "RAX");
    assert!(v.get("detail").is_none(), "{v}");
    let (text, _) = one(Record::Function(&listed(true)));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["entry", "0x48fca0", "+0x0", "first", "instruction"]
    );
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["param", "n", "RAX"]
    );
}

#[test]
fn peek_is_a_table_or_a_line_per_site() {
    let snap = |bytes: &str, asm: &str| Snapshot {
        bytes: bytes.into(),
        asm: asm.into(),
    };
    let site = |kind, addr| PeekedSite {
        kind,
        addr: VirtAddr(addr),
        runtime_addr: addr + 0x1000,
        file: snap("c3", "ret"),
        probed: snap("cc", "int3"),
        detached: snap("c3", "ret"),
    };
    let peek = Peek {
        function: "main.F".into(),
        pid: 42,
        sites: vec![site(SiteKind::Entry, 0x10), site(SiteKind::Return, 0x20)],
    };
    let (text, lines) = both(Record::Peek(&peek));
    assert!(
        text.starts_with("main.F in process 42: 2 probe sites\n"),
        "{text}"
    );
    assert!(text.contains("int3"), "{text}");
    assert!(text.contains("original bytes are back"), "{text}");
    assert_eq!(lines.len(), 2);
    for (line, kind) in lines.iter().zip(["entry", "return"]) {
        assert_eq!(line["type"], "site");
        assert_eq!(
            (line["function"].as_str(), line["pid"].as_u64()),
            (Some("main.F"), Some(42))
        );
        assert_eq!(line["kind"], kind);
        assert_eq!(line["probed"]["asm"], "int3");
    }
}
