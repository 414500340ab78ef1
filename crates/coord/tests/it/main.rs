//! Integration tests: a real daemon process on a temporary socket, driven by
//! the real CLI (and by raw HTTP where a request must be malformed on
//! purpose). One test binary, so the suite links once.

mod support;

mod agents;
mod agents_codex;
mod agents_gemini;
mod agents_tmux;
mod approvals;
mod approvals_tmux;
mod autostart;
mod bad_input;
mod basics;
mod batch;
mod bridge;
mod cluster;
mod compaction;
mod contract;
mod crash;
mod direct_appends;
mod distributed;
mod event_streams;
mod exactly_once;
mod full_disk;
mod guard;
mod http_conformance;
mod idempotency;
mod idle;
mod lifecycle;
mod lock_bounds;
mod main_job;
mod metrics;
mod orders;
mod parity;
mod pods;
mod privacy;
mod process_tree;
mod sentinel;
mod shell;
mod slow_clients;
mod slow_subscriber;
mod store_identity;
mod systemd;
mod terminal;
mod threads;
mod top;
mod truth;
mod truth_cursors;
mod untruths;
mod verify;
mod web;
mod web_approvals;
