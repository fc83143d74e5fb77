//! Facts from outside the registry that retention rules depend on: git history (`git`), and —
//! next — Kubernetes workloads and Helm releases. Each source reads once per evaluation and
//! hands the pure policy core plain data.
//!
//! Owns: reading the sources. May call: `config`.

pub mod git;
