// One run: why it failed (class and evidence) before anything else, the steps, how long
// each took (uPlot), and the tail of each step's log.

import uPlot from "uplot";

import { get, type LogReply, type Run, type StepAttempt } from "./api";
import { fill, h, REFRESH } from "./dom";
import { duration, elapsed, localTime, parseTime, stateBadge, stepElapsed, timeAgo } from "./format";

/** How much of a log's end the page shows. */
const TAIL_BYTES = 64 * 1024;

export async function renderRun(main: HTMLElement, id: string): Promise<void> {
  const run = await get<Run>(`/runs/${encodeURIComponent(id)}`);
  const now = Date.now();
  const refresh = h("button", { type: "button" }, "Refresh");
  refresh.addEventListener("click", () => dispatchEvent(new Event(REFRESH)));
  const logs = h("section", { class: "logs", "aria-labelledby": "logs-title" }, h("h2", { id: "logs-title" }, "Logs"));
  const chart = h("figure", { class: "chart" });

  fill(
    main,
    h("nav", { class: "crumbs" }, h("a", { href: "#/" }, "← All runs")),
    h("h1", {}, "Run ", h("code", {}, run.id), " ", stateBadge(run.state)),
    outcome(run, logs),
    facts(run, now),
    h("p", { class: "status" }, `As of ${localTime(now)} `, refresh),
    h("section", { "aria-labelledby": "steps-title" }, h("h2", { id: "steps-title" }, "Steps"), stepsTable(run, now), chart),
    logs,
  );
  drawDurations(chart, run, now);
  await fillLogs(logs, run);
}

/** Why the run failed, or how it was killed: what an on-call engineer reads first. */
function outcome(run: Run, logs: HTMLElement): HTMLElement | null {
  if (run.state === "failed") {
    const step = run.steps.find((s) => s.state === "failed");
    const items: (HTMLElement | null)[] = [
      row("Failure class", run.failure_class ?? step?.failure_class ?? "unknown"),
      step ? row("Step", `${step.name} (attempt ${step.attempt})`) : null,
      step?.failure_evidence ? row("Evidence", step.failure_evidence) : null,
      step && step.exit_code !== null ? row("Exit code", String(step.exit_code)) : null,
      step && step.signal !== null ? row("Signal", String(step.signal)) : null,
      run.error ? row("Error", run.error) : null,
    ];
    const jump = step ? jumpToLog(logs, step) : null;
    return h("section", { class: "outcome failed", "aria-labelledby": "why" }, h("h2", { id: "why" }, "Why it failed"), h("dl", {}, ...items), jump);
  }
  if (run.kill && (run.state === "killed" || run.state === "stopping" || run.state === "killing")) {
    const kill = run.kill;
    const phases = kill.phases.map((p) => `${p.name} ${p.duration_ms} ms (${p.signalled} signalled)`).join(" · ");
    return h(
      "section",
      { class: "outcome killed", "aria-labelledby": "why" },
      h("h2", { id: "why" }, run.state === "killed" ? "Killed" : "Being killed"),
      h(
        "dl",
        {},
        row("By", kill.requested_by),
        row("Reason", kill.reason || "no reason given"),
        row("Result", kill.result),
        kill.step ? row("Step", kill.step) : null,
        kill.total_ms !== null ? row("Took", `${kill.total_ms} ms`) : null,
        phases ? row("Phases", phases) : null,
        kill.error ? row("Error", kill.error) : null,
      ),
    );
  }
  return null;
}

function jumpToLog(logs: HTMLElement, step: StepAttempt): HTMLElement {
  const button = h("button", { type: "button" }, `Show the log of ${step.name}`);
  button.addEventListener("click", () => {
    const section = logs.querySelector<HTMLElement>(`[data-step="${CSS.escape(step.name)}"]`);
    section?.scrollIntoView();
    section?.querySelector<HTMLElement>("pre")?.focus();
  });
  return button;
}

function row(term: string, value: Node | string): HTMLElement {
  return h("div", {}, h("dt", {}, term), h("dd", {}, value));
}

function facts(run: Run, now: number): HTMLElement {
  return h(
    "dl",
    { class: "facts" },
    row("Workflow", run.workflow),
    row("File", h("code", {}, run.workflow_file)),
    row("Requested by", run.requested_by),
    run.user ? row("Runs as", `${run.user.name} (uid ${run.user.uid})`) : null,
    row("Created", timeAgo(run.created_at)),
    row("Started", timeAgo(run.started_at)),
    row("Ended", timeAgo(run.ended_at)),
    row("Elapsed", elapsed(run, now)),
    run.next_attempt_at ? row("Next attempt", timeAgo(run.next_attempt_at)) : null,
  );
}

function stepsTable(run: Run, now: number): HTMLElement {
  const head = ["#", "Step", "State", "Attempt", "Started", "Took", "Exit", "Output", "Failure"];
  return h(
    "table",
    { class: "steps" },
    h("thead", {}, h("tr", {}, ...head.map((t) => h("th", { scope: "col" }, t)))),
    h(
      "tbody",
      {},
      ...run.steps.map((step) =>
        h(
          "tr",
          { "data-step": step.name, "data-state": step.state },
          h("td", { class: "num" }, String(step.index + 1)),
          h("th", { scope: "row" }, step.name),
          h("td", {}, stateBadge(step.state)),
          h("td", { class: "num" }, step.attempt > 0 ? String(step.attempt) : "—"),
          h("td", {}, timeAgo(step.started_at)),
          h("td", { class: "num" }, stepElapsed(step, now)),
          h("td", {}, exitText(step)),
          h("td", { class: "num" }, step.attempt > 0 ? `${step.output.lines} lines` : "—"),
          h("td", {}, step.failure_class ?? ""),
        ),
      ),
    ),
  );
}

function exitText(step: StepAttempt): string {
  if (step.signal !== null) {
    return `signal ${step.signal}`;
  }
  if (step.exit_code !== null) {
    return `exit ${step.exit_code}`;
  }
  return step.result ?? "";
}

/** A bar per step: how long it took (or has taken so far). */
function drawDurations(figure: HTMLElement, run: Run, now: number): void {
  const started = run.steps.filter((s) => parseTime(s.started_at) !== null);
  if (started.length === 0) {
    figure.remove();
    return;
  }
  const seconds = started.map((s) => ((parseTime(s.ended_at) ?? now) - (parseTime(s.started_at) ?? now)) / 1000);
  const names = started.map((s) => s.name);
  const plotArea = h("div", { class: "plot" });
  fill(
    figure,
    plotArea,
    h("figcaption", {}, `Time per step: ${started.map((s, i) => `${s.name} ${duration((seconds[i] ?? 0) * 1000)}`).join(", ")}`),
  );
  // Bars are an optional path builder in uPlot's types; it ships them.
  const bars = uPlot.paths.bars;
  if (!bars) {
    return;
  }
  const width = Math.min(720, Math.max(320, figure.clientWidth || 640));
  new uPlot(
    {
      width,
      height: 160,
      legend: { show: false },
      cursor: { show: false },
      scales: { x: { time: false, range: [-0.5, started.length - 0.5] }, y: { range: (_u, _min, max) => [0, Math.max(1, max * 1.15)] } },
      axes: [
        { splits: () => started.map((_, i) => i), values: (_u, splits) => splits.map((i) => names[i] ?? "") },
        { label: "s", size: 50 },
      ],
      series: [
        {},
        {
          label: "seconds",
          fill: "#4a78a8",
          stroke: "#1f4e79",
          width: 1,
          paths: bars({ size: [0.6, 80] }),
          points: { show: false },
        },
      ],
    },
    [started.map((_, i) => i), seconds],
    plotArea,
  );
}

/** The last TAIL_BYTES of each started step's log, through the logs route. */
async function fillLogs(section: HTMLElement, run: Run): Promise<void> {
  const started = run.steps.filter((s) => s.attempt > 0);
  if (started.length === 0) {
    section.append(h("p", { class: "empty" }, "No step has started yet."));
    return;
  }
  const parts = started.map((step) => {
    const pre = h("pre", { tabindex: "0", "aria-label": `Log of ${step.name}` }, "Loading…");
    const note = h("p", { class: "muted" });
    section.append(
      h("section", { class: "log", "data-step": step.name }, h("h3", {}, step.name, h("span", { class: "muted" }, ` · attempt ${step.attempt}`)), note, pre),
    );
    return { step, pre, note };
  });
  await Promise.all(
    parts.map(async ({ step, pre, note }) => {
      try {
        const { text, size, shownFrom, cut } = await logTail(run.id, step);
        pre.textContent = text || "(no output)";
        note.textContent =
          (shownFrom > 0 ? `The last ${formatBytes(size - shownFrom)} of ${formatBytes(size)}.` : `${formatBytes(size)}, all shown.`) +
          (cut ? ` Cut: ${cut}` : "");
        // The end is what matters: show it without scrolling the page.
        pre.scrollTop = pre.scrollHeight;
      } catch (e) {
        pre.textContent = "";
        note.className = "error";
        note.textContent = `Could not read the log: ${e instanceof Error ? e.message : String(e)}`;
      }
    }),
  );
}

async function logTail(
  runId: string,
  step: StepAttempt,
): Promise<{ text: string; size: number; shownFrom: number; cut: string | null }> {
  const path = (offset: number) =>
    `/runs/${encodeURIComponent(runId)}/logs?step=${encodeURIComponent(step.name)}&attempt=${step.attempt}&offset=${offset}&max=${TAIL_BYTES}`;
  let reply = await get<LogReply>(path(0));
  if (reply.meta.size > reply.meta.next_offset) {
    reply = await get<LogReply>(path(reply.meta.size - TAIL_BYTES));
  }
  let text = new TextDecoder().decode(Uint8Array.from(atob(reply.data), (c) => c.charCodeAt(0)));
  if (reply.meta.offset > 0) {
    // The chunk starts inside a line: drop that line's end.
    text = text.slice(text.indexOf("\n") + 1);
  }
  return { text, size: reply.meta.size, shownFrom: reply.meta.offset, cut: reply.meta.log_cut ?? null };
}

function formatBytes(n: number): string {
  if (n < 1024) {
    return `${n} B`;
  }
  if (n < 1024 * 1024) {
    return `${(n / 1024).toFixed(1)} KiB`;
  }
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}
