//! Real parts for integration tests: a Distribution registry and the regkeeper binary on free
//! loopback ports (each killed by its handle when dropped, also when a test fails), OCI image
//! layouts written by hand, skopeo, and a raw HTTP client.
#![allow(dead_code)]

pub mod balancer;
pub mod gate;
pub mod git;
pub mod http;
pub mod image;
pub mod memory_registry;
pub mod nginx;
pub mod postgres;
pub mod process;
pub mod prometheus;
pub mod registry;
pub mod regkeeper;

pub use registry::Registry;
pub use regkeeper::Regkeeper;
