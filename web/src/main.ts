// The dashboard's entry: the token gate, and the two pages by the URL's hash
// (`#/` the runs, `#/runs/<id>` one run). Filters live in the query string, so a reload
// or a shared link keeps them.

import "uplot/dist/uPlot.min.css";
import "./style.css";

import { ApiError, forgetToken, get, saveToken, savedToken, Unauthorized, type Identity } from "./api";
import { fill, h, REFRESH } from "./dom";
import { renderOverview } from "./overview";
import { renderRun } from "./run";

const main = document.getElementById("main") as HTMLElement;
const whoEl = document.getElementById("who") as HTMLElement;

/** Renders the page the URL names; a refused token brings back the token form. */
async function route(): Promise<void> {
  if (savedToken() === null) {
    showTokenForm();
    return;
  }
  const runMatch = /^#\/runs\/([a-z0-9]+)$/.exec(location.hash);
  try {
    if (whoEl.childElementCount === 0) {
      showIdentity(await get<Identity>("/whoami"));
    }
    if (runMatch?.[1]) {
      await renderRun(main, runMatch[1]);
    } else {
      await renderOverview(main);
    }
  } catch (e) {
    if (e instanceof Unauthorized) {
      forgetToken();
      showTokenForm(`The agent refused the token (401): ${e.message}. Enter a valid one.`);
    } else {
      fill(
        main,
        h("h1", {}, "Something went wrong"),
        h("p", { class: "error", role: "alert" }, e instanceof ApiError ? `${e.status}: ${e.message}` : String(e)),
        h("p", {}, h("a", { href: "#/" }, "Back to all runs")),
      );
    }
  }
}

function showIdentity(me: Identity): void {
  const forget = h("button", { type: "button", class: "link" }, "Forget token");
  forget.addEventListener("click", () => {
    forgetToken();
    fill(whoEl);
    showTokenForm("Token forgotten.");
  });
  fill(
    whoEl,
    h("span", {}, `${me.user ?? me.caller} · ${me.role ?? "no role"}${me.token ? ` · token ${me.token}` : ""}`),
    " ",
    forget,
  );
}

function showTokenForm(message?: string): void {
  fill(whoEl);
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: "",
    size: "48",
  });
  const status = h("p", { class: message ? "error" : "hint", role: "alert" }, message ?? "");
  const form = h(
    "form",
    { class: "token-form" },
    h("label", { for: "token" }, "API token"),
    input,
    h("button", { type: "submit" }, "Use token"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    try {
      const me = await get<Identity>("/whoami", token);
      saveToken(token);
      showIdentity(me);
      await route();
    } catch (e) {
      status.className = "error";
      status.textContent =
        e instanceof Unauthorized
          ? `The agent refused this token (401): ${e.message}`
          : `Could not check the token: ${e instanceof Error ? e.message : String(e)}`;
      input.select();
    }
  });
  fill(
    main,
    h("h1", {}, "Sign in"),
    h(
      "p",
      {},
      "Paste an API token, made on the host with ",
      h("code", {}, "drover token create NAME --role viewer"),
      ". It is kept for this browser session only.",
    ),
    form,
    status,
  );
  input.focus();
}

// A link to another hash fires both popstate and hashchange: render once per address.
let shown = "";
function navigated(): void {
  if (location.href !== shown) {
    shown = location.href;
    void route();
  }
}
window.addEventListener(REFRESH, () => void route());
window.addEventListener("hashchange", navigated);
window.addEventListener("popstate", navigated);
navigated();
