//! `gotrace funcs`: what a binary offers to trace, with Go signatures where DWARF has them.

use crate::cli::FuncsArgs;
use anyhow::Result;
use gotrace_binary::types::{Signature, TypeTable, Variable};
use gotrace_binary::GoBinary;
use gotrace_plan::pattern::Pattern;
use serde::Serialize;

#[derive(Serialize)]
struct Listed<'a> {
    name: &'a str,
    entry: String,
    size: u64,
    signature: Option<String>,
}

/// `func(n int) (~r0 int)`
pub fn go_signature(sig: &Signature, types: &TypeTable) -> String {
    let list = |vars: &[Variable]| {
        vars.iter()
            .map(|v| format!("{} {}", v.name, types.get(v.ty).name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match sig.results.len() {
        0 => format!("func({})", list(&sig.params)),
        _ => format!("func({}) ({})", list(&sig.params), list(&sig.results)),
    }
}

pub fn run(args: &FuncsArgs) -> Result<()> {
    if !args.binary.exists() {
        anyhow::bail!("{}: no such file", args.binary.display());
    }
    let binary = GoBinary::open(&args.binary)?;
    let pattern = args.pattern.as_deref().map(Pattern::new);
    let dwarf = binary.dwarf()?;
    if dwarf.is_none() {
        eprintln!("gotrace: {} has no DWARF (built with -ldflags=-w or stripped): names and addresses only, no signatures", args.binary.display());
    }
    let listed: Vec<Listed> = binary
        .functions()
        .iter()
        .filter(|f| pattern.as_ref().is_none_or(|p| p.matches(&f.name)))
        .map(|f| Listed {
            name: &f.name,
            entry: f.entry.to_string(),
            size: f.size(),
            signature: dwarf.and_then(|d| d.signature(f.entry).map(|s| go_signature(s, d.types()))),
        })
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&listed)?);
    } else {
        for f in &listed {
            match &f.signature {
                Some(sig) => println!("{:<18} {} {}", f.entry, f.name, sig.trim_start_matches("func")),
                None => println!("{:<18} {}", f.entry, f.name),
            }
        }
    }
    Ok(())
}
