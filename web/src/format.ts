// How states, times and durations read on the page.

import type { Run, RunState, StepAttempt, StepState } from "./api";
import { h } from "./dom";

/** A shape for each state, so a state reads without its colour. */
const SHAPES: Record<RunState | StepState, string> = {
  pending: "○",
  starting: "◔",
  running: "▶",
  stopping: "◼",
  killing: "◼",
  restarting: "↻",
  succeeded: "✓",
  failed: "✗",
  killed: "■",
};

/** The state as a badge: a shape (hidden from screen readers) and the word. */
export function stateBadge(state: RunState | StepState): HTMLElement {
  return h(
    "span",
    { class: `state state-${state}` },
    h("span", { class: "shape", "aria-hidden": "true" }, SHAPES[state]),
    state,
  );
}

export function parseTime(text: string | null | undefined): number | null {
  if (!text) {
    return null;
  }
  const ms = Date.parse(text);
  return Number.isNaN(ms) ? null : ms;
}

/** "120 ms", "3.4 s", "4 min 12 s", "2 h 5 min", "3 d 4 h". */
export function duration(ms: number): string {
  if (ms < 1000) {
    return `${Math.max(0, Math.round(ms))} ms`;
  }
  if (ms < 10_000) {
    return `${(ms / 1000).toFixed(1)} s`;
  }
  const s = Math.round(ms / 1000);
  if (s < 60) {
    return `${s} s`;
  }
  const m = Math.floor(s / 60);
  if (m < 60) {
    return `${m} min ${s % 60} s`;
  }
  const hours = Math.floor(m / 60);
  if (hours < 48) {
    return `${hours} h ${m % 60} min`;
  }
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

/** "12 s ago", "5 min ago", or the date for anything older than a day. */
export function ago(ms: number, now = Date.now()): string {
  const elapsed = now - ms;
  if (elapsed < 24 * 3600 * 1000) {
    const s = Math.max(0, Math.round(elapsed / 1000));
    if (s < 60) {
      return `${s} s ago`;
    }
    if (s < 3600) {
      return `${Math.floor(s / 60)} min ago`;
    }
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min ago`;
  }
  return localTime(ms);
}

/** Local time to the second, as an on-call engineer reads a clock. */
export function localTime(ms: number): string {
  const d = new Date(ms);
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** A `<time>` showing `ago`, its exact local and UTC time on hover. */
export function timeAgo(text: string | null | undefined): HTMLElement | string {
  const ms = parseTime(text);
  if (ms === null || !text) {
    return "—";
  }
  return h("time", { datetime: text, title: `${localTime(ms)} (${text})` }, ago(ms));
}

/** How long the run has been going, or went. */
export function elapsed(run: Run, now = Date.now()): string {
  const start = parseTime(run.started_at);
  if (start === null) {
    return "—";
  }
  return duration((parseTime(run.ended_at) ?? now) - start);
}

export function stepElapsed(step: StepAttempt, now = Date.now()): string {
  const start = parseTime(step.started_at);
  if (start === null) {
    return "—";
  }
  return duration((parseTime(step.ended_at) ?? now) - start);
}

/**
 * The step an engineer wants to see first: the one running now, else the one that failed
 * or was killed, else the last one that started.
 */
export function currentStep(run: Run): StepAttempt | undefined {
  const steps = run.steps;
  return (
    steps.find((s) => s.state === "running" || s.state === "starting") ??
    steps.find((s) => s.state === "failed" || s.state === "killed") ??
    [...steps].reverse().find((s) => s.attempt > 0)
  );
}

/** "root" from "uid 0 (root) via http (token ci)"; the whole text when it has no name. */
export function who(run: Run): string {
  const name = /\(([^)]+)\)/.exec(run.requested_by)?.[1];
  const via = / via (\w+)/.exec(run.requested_by)?.[1];
  return name ? (via ? `${name} via ${via}` : name) : run.requested_by;
}
