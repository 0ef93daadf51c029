// The agent's HTTP API (/api/v1), as the dashboard uses it: the bearer token kept for
// this browser session, typed replies, and problems (RFC 9457) turned into errors.

export type RunState =
  | "pending"
  | "running"
  | "stopping"
  | "killing"
  | "restarting"
  | "succeeded"
  | "failed"
  | "killed";

export const RUN_STATES: readonly RunState[] = [
  "pending",
  "running",
  "stopping",
  "killing",
  "restarting",
  "succeeded",
  "failed",
  "killed",
];

export type StepState = "pending" | "starting" | "running" | "succeeded" | "failed" | "killed";

export interface StepAttempt {
  name: string;
  index: number;
  attempt: number;
  state: StepState;
  unit: string | null;
  exit_code: number | null;
  signal: number | null;
  result: string | null;
  output: { bytes: number; lines: number; last_output_at: string | null };
  started_at: string | null;
  ended_at: string | null;
  failure_class?: string | null;
  failure_evidence?: string | null;
  note?: string | null;
  log_cut?: string | null;
}

export interface KillPhase {
  name: string;
  started_ms: number;
  duration_ms: number;
  signalled: number;
}

export interface KillRecord {
  requested_by: string;
  reason: string;
  requested_at: string;
  result: string;
  step: string | null;
  phases: KillPhase[];
  total_ms: number | null;
  error: string | null;
}

export interface Run {
  id: string;
  workflow: string;
  workflow_file: string;
  state: RunState;
  requested_by: string;
  user?: { uid: number; name: string } | null;
  created_at: string;
  started_at: string | null;
  ended_at: string | null;
  error: string | null;
  steps: StepAttempt[];
  kill?: KillRecord | null;
  next_attempt_at?: string | null;
  failure_class?: string | null;
}

export interface RunPage {
  runs: Run[];
  next_cursor: string | null;
}

export interface LogMeta {
  attempt: number;
  offset: number;
  next_offset: number;
  size: number;
  more: boolean;
  log_cut?: string | null;
}

export interface LogReply {
  meta: LogMeta;
  data: string;
}

export interface Identity {
  caller: string;
  user: string | null;
  role: string | null;
  token: string | null;
}

const TOKEN_KEY = "drover.token";

/** The token of this browser session: kept until the tab closes, never in localStorage. */
export function savedToken(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function saveToken(token: string): void {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function forgetToken(): void {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** The agent refused the token (401): the page asks for another. */
export class Unauthorized extends Error {}

/** Any other refusal: the problem's title and detail, as the agent wrote them. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** GET `path` under /api/v1 with the session's token; the reply's JSON. */
export async function get<T>(path: string, token = savedToken()): Promise<T> {
  if (token === null) {
    throw new Unauthorized("No token entered yet.");
  }
  const reply = await fetch(`/api/v1${path}`, {
    headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
  });
  if (reply.ok) {
    return (await reply.json()) as T;
  }
  const message = await problemText(reply);
  if (reply.status === 401) {
    throw new Unauthorized(message);
  }
  throw new ApiError(reply.status, message);
}

async function problemText(reply: Response): Promise<string> {
  try {
    const problem = (await reply.json()) as { title?: string; detail?: string };
    return [problem.title, problem.detail].filter(Boolean).join(": ") || `HTTP ${reply.status}`;
  } catch {
    return `HTTP ${reply.status} ${reply.statusText}`;
  }
}
