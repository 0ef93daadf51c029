//! Rebuilds drover when the dashboard's built assets (`web/dist`) appear, change or go:
//! rust-embed (`src/api/web.rs`) tells cargo about each file it embedded, but not about a
//! `web/dist` built after a build that found none.

fn main() {
    println!("cargo::rerun-if-changed=web/dist");
}
