//! Agent cold start: from `systemctl --user start drover` (the shipped user unit, `Type=dbus`)
//! to the first `Run` accepted, and from a `Run` call with no agent running (D-Bus
//! activation starts it) to its reply; beside `systemctl --user start` of a trivial
//! `Type=dbus` service (this binary, re-executed: it takes a bus name and waits) in the
//! same sandbox, interleaved start by start. Needs root. `cargo bench --bench coldstart`;
//! `STARTS=N` (default 20).

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use common::{BenchEnv, DROVER, percentile};
use drover::api::DroverProxy;

const TRIVIAL_ENV: &str = "DROVER_BENCH_TRIVIAL_SERVICE";
const TRIVIAL_NAME: &str = "org.drover.BenchTrivial";

fn main() {
    if std::env::var_os(TRIVIAL_ENV).is_some() {
        trivial_service();
        return;
    }
    let starts = common::count("STARTS", 20);
    let env = BenchEnv::sandbox_only();
    install(&env);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let conn = runtime.block_on(async {
        zbus::connection::Builder::address(env.info.bus_address.as_str())
            .build()
            .await
            .expect("connect to the sandbox's bus")
    });
    let proxy = runtime.block_on(DroverProxy::new(&conn)).expect("proxy");
    let workflow = env.workflow(
        "true.toml",
        "name = \"t\"\n[[step]]\nname = \"s\"\nrun = \"true\"\n",
    );
    let run = |proxy: &DroverProxy<'_>| {
        runtime
            .block_on(proxy.run(&workflow.to_string_lossy(), HashMap::new()))
            .expect("Run accepted")
    };

    let (mut unit, mut activation, mut trivial) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..starts {
        // The agent's unit started by hand, then the first Run.
        let t = Instant::now();
        systemctl(&env, &["start", "drover.service"]);
        run(&proxy);
        unit.push(t.elapsed().as_secs_f64() * 1e3);
        systemctl(&env, &["stop", "drover.service"]);

        // No agent: the Run call itself activates it.
        let t = Instant::now();
        run(&proxy);
        activation.push(t.elapsed().as_secs_f64() * 1e3);
        systemctl(&env, &["stop", "drover.service"]);

        let t = Instant::now();
        systemctl(&env, &["start", "bench-trivial.service"]);
        trivial.push(t.elapsed().as_secs_f64() * 1e3);
        systemctl(&env, &["stop", "bench-trivial.service"]);
        eprint!("\r{}/{starts} starts", i + 1);
    }
    eprintln!();

    let base = percentile(&trivial, 50.0);
    println!();
    println!("Cold start, {starts} starts each, interleaved (ms)");
    println!();
    println!("| what | p50 | p95 | max | p50 / trivial service |");
    println!("|---|---|---|---|---|");
    for (what, samples) in [
        (
            "`systemctl --user start drover` → first `Run` accepted",
            &unit,
        ),
        (
            "`Run` with no agent running (D-Bus activation) → accepted",
            &activation,
        ),
        (
            "`systemctl --user start` of a trivial `Type=dbus` service (baseline)",
            &trivial,
        ),
    ] {
        println!(
            "| {what} | {:.1} | {:.1} | {:.1} | {:.2}× |",
            percentile(samples, 50.0),
            percentile(samples, 95.0),
            percentile(samples, 100.0),
            percentile(samples, 50.0) / base
        );
    }
}

/// The shipped user unit, slice and activation file in the sandbox's user manager (the
/// binary under test for /usr/bin/drover), the agent's XDG directories in the bench's
/// directory, and the trivial service beside them.
fn install(env: &BenchEnv) {
    let runtime = &env.info.runtime_dir;
    let units = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/units"));
    for (from, to) in [
        ("user/drover.service", "systemd/user/drover.service"),
        ("drover.slice", "systemd/user/drover.slice"),
        (
            "dbus/services/org.drover.Drover1.service",
            "dbus-1/services/org.drover.Drover1.service",
        ),
    ] {
        let text = std::fs::read_to_string(units.join(from))
            .unwrap_or_else(|e| panic!("units/{from}: {e}"))
            .replace("/usr/bin/drover", DROVER);
        let path = runtime.join(to);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(&path, text).expect("install a unit");
    }
    let me = std::env::current_exe().expect("own path");
    std::fs::write(
        runtime.join("systemd/user/bench-trivial.service"),
        format!(
            "[Service]\nType=dbus\nBusName={TRIVIAL_NAME}\nEnvironment={TRIVIAL_ENV}=1\nExecStart={}\n",
            me.display()
        ),
    )
    .expect("install the trivial service");
    let config = env.dir.path().join("config/drover/drover.toml");
    std::fs::create_dir_all(config.parent().expect("a parent")).expect("mkdir");
    std::fs::write(&config, "[http]\nlisten = \"127.0.0.1:0\"\n").expect("the agent's config");
    systemctl(
        env,
        &[
            "set-environment",
            &format!(
                "XDG_CONFIG_HOME={}",
                env.dir.path().join("config").display()
            ),
            &format!("XDG_STATE_HOME={}", env.dir.path().join("state").display()),
            "DROVER_LOG=warn",
        ],
    );
    systemctl(env, &["daemon-reload"]);
}

fn systemctl(env: &BenchEnv, args: &[&str]) {
    let out = env
        .info
        .command("systemctl")
        .arg("--user")
        .args(args)
        .output()
        .expect("systemctl");
    assert!(
        out.status.success(),
        "systemctl --user {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The baseline service: takes its bus name and waits to be stopped.
fn trivial_service() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let _conn = zbus::connection::Builder::session()
            .name(TRIVIAL_NAME)
            .build()
            .await
            .expect("connect and take the name");
        std::future::pending::<()>().await;
    });
}
