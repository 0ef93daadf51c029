#!/bin/sh
# The README's first command: start an agent, run examples/hello.toml, and show its scope
# and its journal lines. Run it inside `drover sandbox` where no systemd user manager is
# reachable:  sudo target/debug/drover sandbox -- examples/demo.sh
set -eu
cd "$(dirname "$0")/.."
drover=${DROVER:-target/debug/drover}
state=$(mktemp -d)
"$drover" agent --state-dir "$state" 2>"$state/agent.log" &
agent=$!
trap 'kill $agent 2>/dev/null; rm -rf "$state"' EXIT
until busctl --user status org.drover.Drover1 >/dev/null 2>&1; do sleep 0.1; done

run=$("$drover" run examples/hello.toml)
echo "== run $run started; its steps while the second one runs:"
sleep 1
systemctl --user list-units --no-pager --plain "drover-$run*"
systemctl --user status --no-pager --lines=0 "drover-$run-nap-1.scope" || true
until "$drover" show "$run" | grep -qE '^state: +(succeeded|failed)'; do sleep 0.2; done
echo
echo "== drover show $run"
"$drover" show "$run"
echo
echo "== journalctl DROVER_RUN=$run"
journalctl --no-pager -o short DROVER_RUN="$run"
