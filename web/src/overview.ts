// The runs, newest first, a page at a time: filters (state, workflow) and the page size
// live in the query string, the page's cursor too, so a reload shows the same page.

import { REFRESH } from "./dom";
import { get, RUN_STATES, type RunPage, type RunState } from "./api";
import { fill, h } from "./dom";
import { currentStep, elapsed, localTime, stateBadge, timeAgo, who } from "./format";

const PAGE_SIZES = [25, 50, 100, 200];
const DEFAULT_LIMIT = 50;

interface Filters {
  states: RunState[];
  workflow: string;
  limit: number;
  cursor: string;
}

function readFilters(): Filters {
  const q = new URLSearchParams(location.search);
  const states = (q.get("state") ?? "")
    .split(",")
    .filter((s): s is RunState => (RUN_STATES as readonly string[]).includes(s));
  const limit = Number(q.get("limit"));
  return {
    states,
    workflow: q.get("workflow") ?? "",
    limit: Number.isInteger(limit) && limit >= 1 && limit <= 500 ? limit : DEFAULT_LIMIT,
    cursor: q.get("cursor") ?? "",
  };
}

/** The address of the overview with `filters`: only what differs from the defaults. */
function addressOf(filters: Filters): string {
  const q = new URLSearchParams();
  if (filters.states.length > 0) {
    q.set("state", filters.states.join(","));
  }
  if (filters.workflow) {
    q.set("workflow", filters.workflow);
  }
  if (filters.limit !== DEFAULT_LIMIT) {
    q.set("limit", String(filters.limit));
  }
  if (filters.cursor) {
    q.set("cursor", filters.cursor);
  }
  const search = q.toString();
  return `${location.pathname}${search ? `?${search}` : ""}#/`;
}

/**
 * The cursors of the pages before this one, for "Newer". Kept in the history entry, so
 * Back and a reload know them too.
 */
function earlierCursors(): string[] {
  const state: unknown = history.state;
  if (state && typeof state === "object" && "earlier" in state && Array.isArray(state.earlier)) {
    return state.earlier.filter((c): c is string => typeof c === "string");
  }
  return [];
}

function go(filters: Filters, earlier: string[]): void {
  history.pushState({ earlier }, "", addressOf(filters));
  dispatchEvent(new PopStateEvent("popstate"));
}

export async function renderOverview(main: HTMLElement): Promise<void> {
  const filters = readFilters();
  const query = new URLSearchParams();
  if (filters.states.length > 0) {
    query.set("state", filters.states.join(","));
  }
  if (filters.workflow) {
    query.set("workflow", filters.workflow);
  }
  query.set("limit", String(filters.limit));
  if (filters.cursor) {
    query.set("cursor", filters.cursor);
  }
  const page = await get<RunPage>(`/runs?${query.toString()}`);
  const fetchedAt = Date.now();
  const earlier = earlierCursors();

  const form = filterForm(filters);

  const rows = page.runs.map((run) => {
    const step = currentStep(run);
    return h(
      "tr",
      { "data-run": run.id, "data-state": run.state },
      h("td", {}, stateBadge(run.state)),
      h("td", {}, h("a", { href: `#/runs/${run.id}`, class: "run-link" }, run.id)),
      h("td", {}, run.workflow),
      h(
        "td",
        {},
        step ? step.name : "—",
        step && step.attempt > 1 ? h("span", { class: "muted" }, ` (attempt ${step.attempt})`) : null,
      ),
      h("td", {}, timeAgo(run.created_at)),
      h("td", { class: "num" }, elapsed(run, fetchedAt)),
      h("td", { title: run.requested_by }, who(run)),
    );
  });

  const table =
    rows.length > 0
      ? h(
          "table",
          { class: "runs" },
          h("caption", { class: "visually-hidden" }, "Runs, newest first"),
          h(
            "thead",
            {},
            h(
              "tr",
              {},
              ...["State", "Run", "Workflow", "Current step", "Created", "Elapsed", "Who"].map((t) =>
                h("th", { scope: "col" }, t),
              ),
            ),
          ),
          h("tbody", {}, ...rows),
        )
      : h("p", { class: "empty" }, filters.states.length || filters.workflow ? "No runs match these filters." : "No runs yet.");

  const newer = h("button", { type: "button" }, "← Newer");
  newer.disabled = !filters.cursor;
  newer.addEventListener("click", () => {
    const before = earlier.slice(0, -1);
    go({ ...filters, cursor: earlier.at(-1) ?? "" }, before);
  });
  const older = h("button", { type: "button" }, "Older →");
  older.disabled = !page.next_cursor;
  older.addEventListener("click", () => {
    if (page.next_cursor) {
      go({ ...filters, cursor: page.next_cursor }, [...earlier, filters.cursor]);
    }
  });
  const newest = h("button", { type: "button" }, "Newest");
  newest.disabled = !filters.cursor;
  newest.addEventListener("click", () => go({ ...filters, cursor: "" }, []));
  const refresh = h("button", { type: "button" }, "Refresh");
  refresh.addEventListener("click", () => dispatchEvent(new Event(REFRESH)));

  fill(
    main,
    h("h1", {}, "Runs"),
    form,
    h(
      "p",
      { class: "status", "aria-live": "polite" },
      `${page.runs.length} run${page.runs.length === 1 ? "" : "s"} on this page, newest first · as of ${localTime(fetchedAt)} `,
      refresh,
    ),
    table,
    h("nav", { class: "pager", "aria-label": "Pages" }, newest, newer, older),
  );
}

function filterForm(filters: Filters): HTMLFormElement {
  const boxes = RUN_STATES.map((state) => {
    const box = h("input", { type: "checkbox", name: "state", value: state, id: `state-${state}` });
    box.checked = filters.states.includes(state);
    return h("label", { class: "check", for: `state-${state}` }, box, ` ${state}`);
  });
  const workflow = h("input", {
    id: "workflow",
    name: "workflow",
    type: "search",
    value: filters.workflow,
    autocomplete: "off",
    placeholder: "any",
  });
  const limit = h(
    "select",
    { id: "limit", name: "limit" },
    ...[...new Set([...PAGE_SIZES, filters.limit])]
      .sort((a, b) => a - b)
      .map((n) => {
        const option = h("option", { value: String(n) }, String(n));
        option.selected = n === filters.limit;
        return option;
      }),
  );
  const clear = h("button", { type: "button" }, "Clear filters");
  clear.addEventListener("click", () => go({ states: [], workflow: "", limit: filters.limit, cursor: "" }, []));
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter runs" },
    h("fieldset", {}, h("legend", {}, "State"), ...boxes),
    h("div", { class: "field" }, h("label", { for: "workflow" }, "Workflow"), workflow),
    h("div", { class: "field" }, h("label", { for: "limit" }, "Per page"), limit),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Apply"), clear),
  );
  // Filters apply when asked (Enter or Apply), not per keystroke: one request per change.
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    go(
      {
        states: data.getAll("state").filter((s): s is RunState => (RUN_STATES as readonly unknown[]).includes(s)),
        workflow: String(data.get("workflow") ?? "").trim(),
        limit: Number(data.get("limit")) || DEFAULT_LIMIT,
        cursor: "",
      },
      [],
    );
  });
  return form;
}
