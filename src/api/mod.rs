//! The agent's doors to the outside: the D-Bus service `org.drover.Drover1` (and the client
//! proxy generated from it, which the CLI uses), the HTTP listener (`http`: `/metrics`,
//! `/healthz`), the HTTP API it serves (`rest`: `/api/v1`) and the dashboard (`web`: `/`,
//! the built front end of `web/`, embedded). Each is an adapter over the
//! operations (`ops`); only this module and the CLI know the wire formats.

pub mod dbus;
pub mod http;
pub mod prometheus;
pub mod rest;
pub mod web;

pub use dbus::{DroverProxy, RunChangedStream};

pub const BUS_NAME: &str = "org.drover.Drover1";
pub const OBJECT_PATH: &str = "/org/drover/Drover1";
