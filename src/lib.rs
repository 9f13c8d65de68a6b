//! `dissuade`: an anti-fraud early-warning stream processor.
//!
//! A suspicious-call event flows through the modules in the order they are listed here:
//! [`event`] decodes and validates the record, [`features`] adds it to its caller's and
//! callee's sliding windows, [`rules`] scores it, with those windows' figures, against the
//! analysts' rule set, [`grid`] finds the police grid cell that contains the person at risk, [`dispatch`]
//! keeps one open task per person, and [`task`] encodes the dissuasion task for the officer.
//! [`lifecycle`] closes the loop: officers' feedback, deadlines and escalations to duty desks.
//! [`pipeline`] ties those stages into one synchronous call with no I/O, so the Kafka service,
//! the command line, the tests and the benchmarks all drive the same code. [`report`] reads
//! the task and feedback topics back into the figures the anti-fraud centre reports.
//! [`reload`] swaps in changed rules, lists, grid map and roster while the service runs, and
//! [`shadow`] scores candidate rules beside the live ones.
pub mod backtest;
pub mod cli;
pub mod config;
pub mod dispatch;
pub mod event;
pub mod features;
pub mod grid;
pub mod http;
mod json;
pub mod kafka;
pub mod lifecycle;
pub mod metrics;
pub mod phone;
pub mod pipeline;
pub mod privacy;
pub mod reload;
pub mod report;
pub mod rules;
pub mod service;
pub mod shadow;
pub mod synth;
mod table;
pub mod task;
pub mod web;
