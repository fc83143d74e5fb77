//! Facts from outside the registry that retention rules depend on: git history (`git`),
//! Kubernetes workloads (`kube`), Helm releases (`helm`), and image references resolved to this
//! registry's repositories (`images`); `usage` gathers the last three for the plan. Each source
//! reads once per evaluation and hands the pure policy core plain data.
//!
//! Owns: reading the sources. May call: `config`, `policy` (its input types).

pub mod commit_graph;
pub mod git;
pub mod helm;
pub mod images;
pub mod kube;
pub mod rendered;
pub mod usage;
