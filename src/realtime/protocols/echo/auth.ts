// The call laravel-echo-server makes to the app for `private-*` and
// `presence-*` channels (src/channels/private-channel.ts): POST, form-encoded
// `channel_name` (and `socket_id`, which Laravel's Pusher-style auth reads),
// with the subscribe's `auth.headers` (X-CSRF-TOKEN, Authorization), the
// browser's Cookie from the handshake, and `X-Requested-With:
// XMLHttpRequest`. Laravel answers the JSON of validAuthenticationResponse()
// as text/html: `true` for a private channel, `{"channel_data": {"user_id",
// "user_info"}}` for a presence channel; 419 for a bad session or CSRF token,
// 403 for a refused channel.

/** Most of an answer read; Laravel's are a few hundred bytes. */
const MAX_ANSWER_BYTES = 64 * 1024;
const MAX_HEADERS = 32;
const MAX_HEADER_BYTES = 8 * 1024;
const TOKEN_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$/;
/** Headers a client may not set on the call: they describe the request the relay makes. */
const RESERVED = new Set([
  'host',
  'content-length',
  'content-type',
  'connection',
  'transfer-encoding',
  'keep-alive',
  'upgrade',
  'te',
  'trailer',
  'expect',
  'x-requested-with',
  'proxy-authorization',
]);

export type AuthOutcome =
  | { readonly ok: true; readonly answer: unknown }
  /** `status` is the endpoint's HTTP status, 0 when there was no usable answer. */
  | {
      readonly ok: false;
      readonly status: number;
      readonly reason: 'auth_refused' | 'auth_failed' | 'auth_timeout' | 'auth_garbage';
      readonly detail: string;
    };

/** The client's `auth.headers`, kept only where they are well-formed header names and values. */
export function clientHeaders(auth: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (typeof auth !== 'object' || auth === null) return out;
  const headers = (auth as Record<string, unknown>).headers;
  if (typeof headers !== 'object' || headers === null || Array.isArray(headers)) return out;
  let n = 0;
  for (const [name, value] of Object.entries(headers)) {
    if (n >= MAX_HEADERS) break;
    if (!TOKEN_RE.test(name) || RESERVED.has(name.toLowerCase())) continue;
    if (typeof value !== 'string' || value.length > MAX_HEADER_BYTES || /[\r\n\0]/.test(value)) continue;
    out[name] = value;
    n++;
  }
  return out;
}

export interface AuthRequest {
  readonly url: URL;
  readonly channel: string;
  readonly socketId: string;
  /** The handshake's Cookie header. */
  readonly cookie: string | undefined;
  /** The subscribe's `auth` (its `headers` are sent). */
  readonly auth: unknown;
  readonly timeoutMs: number;
}

/** Asks the app whether a socket may join a channel; never throws. */
export async function authorize(req: AuthRequest): Promise<AuthOutcome> {
  const headers: Record<string, string> = clientHeaders(req.auth);
  const hasCookie = Object.keys(headers).some((h) => h.toLowerCase() === 'cookie');
  if (!hasCookie && req.cookie !== undefined) headers.Cookie = req.cookie;
  headers['X-Requested-With'] = 'XMLHttpRequest';
  headers['Content-Type'] = 'application/x-www-form-urlencoded';
  headers.Accept = 'application/json, text/html';
  const signal = AbortSignal.timeout(req.timeoutMs);
  let res: Response;
  try {
    res = await fetch(req.url, {
      method: 'POST',
      headers,
      body: new URLSearchParams({ channel_name: req.channel, socket_id: req.socketId }).toString(),
      redirect: 'manual',
      signal,
    });
  } catch (err) {
    return failure(signal, err);
  }
  let text: string;
  try {
    text = await readCapped(res);
  } catch (err) {
    return failure(signal, err);
  }
  if (res.status < 200 || res.status > 299) {
    return { ok: false, status: res.status, reason: 'auth_refused', detail: `HTTP ${res.status}` };
  }
  try {
    const answer: unknown = JSON.parse(text);
    if (answer === false || answer === null) {
      return { ok: false, status: 0, reason: 'auth_garbage', detail: `the answer is ${text}` };
    }
    return { ok: true, answer };
  } catch {
    return {
      ok: false,
      status: 0,
      reason: 'auth_garbage',
      detail: `HTTP ${res.status} with a body that is not JSON: ${JSON.stringify(text.slice(0, 80))}`,
    };
  }
}

function failure(signal: AbortSignal, err: unknown): AuthOutcome {
  if (signal.aborted) return { ok: false, status: 0, reason: 'auth_timeout', detail: 'no answer in time' };
  const e = err as Error & { cause?: { code?: string; message?: string } };
  return {
    ok: false,
    status: 0,
    reason: 'auth_failed',
    detail: e.cause?.code ?? e.cause?.message ?? e.message,
  };
}

async function readCapped(res: Response): Promise<string> {
  if (res.body === null) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > MAX_ANSWER_BYTES) {
      await reader.cancel().catch(() => {});
      throw new Error(`the answer is larger than ${MAX_ANSWER_BYTES} bytes`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * A presence member from the answer's `channel_data` (an object, or the JSON
 * text of one, as Laravel versions differ): `user_id` (a string or a number)
 * and `user_info` (any JSON).
 */
export function memberFrom(answer: unknown): { user: string; info: string | undefined } | undefined {
  if (typeof answer !== 'object' || answer === null) return undefined;
  let data: unknown = (answer as Record<string, unknown>).channel_data;
  if (typeof data === 'string') {
    try {
      data = JSON.parse(data);
    } catch {
      return undefined;
    }
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data)) return undefined;
  const { user_id: id, user_info: info } = data as Record<string, unknown>;
  let user: string;
  if (typeof id === 'number' && Number.isSafeInteger(id)) user = String(id);
  else if (typeof id === 'string') user = id;
  else return undefined;
  return { user, info: info === undefined ? undefined : JSON.stringify(info) };
}

/** A user id as Echo clients and laravel-echo-server's API show it: a number when Laravel's was one. */
export function userIdOut(user: string): string | number {
  return /^(0|-?[1-9][0-9]{0,14})$/.test(user) ? Number(user) : user;
}
