//! Integration tests of the proxy against a real Distribution registry, driven by real clients.

#[path = "../support/mod.rs"]
mod support;

mod auth;
mod bounds;
mod cleanup;
mod cli;
mod connections;
mod faults;
mod idle;
mod monitoring;
mod notifications;
mod operator;
mod plan;
mod recording;
mod references;
mod replicas;
mod sync;
mod tls;
mod transfers;
mod untag;
mod uploads;
mod vanished;
