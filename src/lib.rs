//! drover: a host agent that runs coding-agent workflows in systemd scopes and lets
//! operators kill, restart and monitor them. See `docs/architecture.md` for the map.
