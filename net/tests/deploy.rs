//! The deployment files (`Dockerfile`, `deploy/`) against the keel they deploy: every
//! `KEEL_*` variable they set is one keel reads, and the Kubernetes manifests pass their
//! offline checks (`deploy/kubernetes/check.py`; Debian: `python3-yaml`).
#![cfg(not(madsim))]
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `KEEL_*` names in `text` (a build's own `KEEL_BUILD_*` aside).
fn keel_variables(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices("KEEL_") {
        let name: String = text[at..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        let name = name.trim_end_matches('_');
        // `KEEL_<FLAG>` in prose names no variable.
        if name != "KEEL" && !name.starts_with("KEEL_BUILD_") {
            names.insert(name.to_string());
        }
    }
    names
}

#[test]
fn every_variable_the_deployment_files_set_is_one_keel_reads() {
    let help = Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let read = keel_variables(&help);
    assert!(read.contains("KEEL_NAME") && read.len() > 30, "{help}");
    for file in [
        "Dockerfile",
        "deploy/systemd/keel.service",
        "deploy/systemd/keel.env",
        "deploy/kubernetes/statefulset.yaml",
    ] {
        let text = std::fs::read_to_string(repo().join(file)).unwrap();
        let set = keel_variables(&text);
        assert!(!set.is_empty(), "{file} sets no KEEL_ variable");
        let unknown: Vec<_> = set.difference(&read).collect();
        assert!(
            unknown.is_empty(),
            "{file} sets {unknown:?}, which keel does not read"
        );
    }
}

#[test]
fn the_kubernetes_manifests_pass_their_offline_checks() {
    let output = Command::new("python3")
        .arg(repo().join("deploy/kubernetes/check.py"))
        .output()
        .expect("python3 (Debian: apt-get install python3-yaml)");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
