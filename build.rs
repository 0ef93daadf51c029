//! Rebuilds drover when the dashboard's built assets (`web/dist`) appear, change or go:
//! rust-embed (`src/api/web.rs`) tells cargo about each file it embedded, but not about a
//! `web/dist` built after a build that found none.

fn main() {
    // Cargo takes a path that does not exist as always changed, so without `web/dist` it
    // watches `web/` (which holds it once built) rather than rebuild drover every time.
    if std::path::Path::new("web/dist").is_dir() {
        println!("cargo::rerun-if-changed=web/dist");
    } else {
        println!("cargo::rerun-if-changed=web");
    }
}
