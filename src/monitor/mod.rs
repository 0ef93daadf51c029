//! Monitoring: the agent's self-metrics and the Prometheus exposition.

pub mod prometheus;
pub mod selfmetrics;
