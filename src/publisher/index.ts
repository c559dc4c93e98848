import { randomBytes, randomUUID } from 'node:crypto';
import { redactUrl } from '../config/schema.js';
import type { ErrorCode } from '../errors.js';
import { SIGNATURE_HEADERS, sign } from '../http/auth.js';
import type { PublishResult } from '../ingest/ingest.js';
import type { PublishBody } from '../ingest/schema.js';

// pushrelay/publisher: what a Node backend needs to hand the relay messages.
// Every publish carries an idempotency id (made up when the caller gives
// none), so a retry after a lost answer is delivered once; requests are
// HMAC-signed when a key name is given, so the secret never travels.

export type { PublishResult };

/** A publish: `event`, `data`, and at least one of `users`, `channels`, `broadcast: true`. */
export type PublishMessage = PublishBody;

export interface UserPresence {
  user: string;
  online: boolean;
  sockets: number;
}

export interface ChannelPresence {
  channel: string;
  sockets: number;
  /** `user_info`: the member's token claim (or Laravel Echo `channel_data.user_info`), when it has one. */
  users: { id: string; sockets: number; user_info?: unknown }[];
}

export interface HistoryPage {
  channel: string;
  epoch: string;
  /** The channel's latest offset. */
  offset: number;
  /** False when history no longer reaches back to `since`. */
  complete: boolean;
  messages: { id: string; event: string; data: unknown; offset: number; ts: number }[];
}

export interface NodeInfo {
  id: string;
  sockets: number;
  users: number;
  startedAt: number;
  lastSeen: number;
  connections: number;
  publishes: number;
  deliveries: number;
}

export interface NodesAnswer {
  node: string;
  mode: 'standalone' | 'cluster';
  nodes: NodeInfo[];
}

export interface PublisherOptions {
  /** The relay (or its load balancer), e.g. `https://push.example.com`. */
  url: string;
  /** The publisher key's secret. */
  secret: string;
  /** The key's name: when set, requests are signed and the secret never leaves this process; else Bearer. */
  keyName?: string;
  /** Attempts after the first for network errors, 5xx and 429 (default 3). */
  retries?: number;
  /** Per attempt, in milliseconds (default 10000). */
  timeoutMs?: number;
  /** A Retry-After longer than this is not waited for: the error is thrown (default 10000 ms). */
  maxRetryDelayMs?: number;
  /** For tests and unusual runtimes. */
  fetch?: typeof fetch;
}

/** The relay refused a request (or could not be reached): `code` is the relay's error code. */
export class PublisherError extends Error {
  constructor(
    readonly code: ErrorCode | 'network_error',
    message: string,
    /** The HTTP status, 0 when no answer came. */
    readonly status: number,
    /** Seconds the relay asked to wait (429, 503). */
    readonly retryAfter?: number,
  ) {
    super(message);
    this.name = 'PublisherError';
  }

  /** Whether trying again later may succeed. */
  get retryable(): boolean {
    return this.status === 0 || this.status === 429 || this.status >= 500;
  }
}

const KEY_NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;

export class Publisher {
  private readonly base: URL;
  private readonly fetch: typeof fetch;

  constructor(private readonly options: PublisherOptions) {
    if (options === null || typeof options !== 'object')
      throw new TypeError('Publisher needs { url, secret }');
    let base: URL;
    try {
      base = new URL(options.url);
    } catch {
      const shown = typeof options.url === 'string' ? redactUrl(options.url) : options.url;
      throw new TypeError(`url must be the relay's http(s) URL, got ${JSON.stringify(shown)}`);
    }
    if (base.protocol !== 'http:' && base.protocol !== 'https:') {
      throw new TypeError(`url must use http or https, got "${base.protocol}"`);
    }
    if (base.username !== '' || base.password !== '') {
      // fetch refuses such a URL with an error that prints it, password included.
      throw new TypeError(
        `url must not carry credentials (pass the key as secret and keyName), got "${redactUrl(options.url)}"`,
      );
    }
    if (typeof options.secret !== 'string' || options.secret === '') {
      throw new TypeError('secret must be the publisher key secret (PUSHRELAY_KEYS name:secret)');
    }
    if (options.keyName !== undefined && !KEY_NAME_RE.test(options.keyName)) {
      throw new TypeError(
        `keyName must be a key name from PUSHRELAY_KEYS, got ${JSON.stringify(options.keyName)}`,
      );
    }
    for (const n of ['retries', 'timeoutMs', 'maxRetryDelayMs'] as const) {
      const v = options[n];
      if (v !== undefined && (!Number.isInteger(v) || v < 0))
        throw new TypeError(`${n} must be an integer >= 0`);
    }
    this.base = base;
    this.fetch = options.fetch ?? globalThis.fetch;
  }

  /** Publishes one message; answers who was online and where it went. */
  async publish(message: PublishMessage): Promise<PublishResult> {
    return this.request<PublishResult>('POST', '/v1/publish', withId(checkMessage(message, 'message')));
  }

  /** Publishes up to 1000 messages in one request; one invalid message refuses them all. */
  async batch(messages: PublishMessage[]): Promise<(PublishResult & { ok: true })[]> {
    if (!Array.isArray(messages) || messages.length === 0) {
      throw new TypeError('batch takes a non-empty array of messages');
    }
    const body = { messages: messages.map((m, i) => withId(checkMessage(m, `messages[${i}]`))) };
    const answer = await this.request<{ results: (PublishResult & { ok: true })[] }>(
      'POST',
      '/v1/batch',
      body,
    );
    return answer.results;
  }

  /** Whether a user has a socket anywhere in the cluster. */
  async userPresence(user: string): Promise<UserPresence> {
    return this.request('GET', `/v1/users/${segment(user, 'user')}/presence`);
  }

  /** Who is in a channel, cluster-wide. */
  async channelPresence(channel: string): Promise<ChannelPresence> {
    return this.request('GET', `/v1/channels/${segment(channel, 'channel')}/presence`);
  }

  /** Messages of a channel after offset `since`, oldest first. */
  async history(channel: string, options: { since?: number; limit?: number } = {}): Promise<HistoryPage> {
    const query = new URLSearchParams();
    for (const k of ['since', 'limit'] as const) {
      const v = options[k];
      if (v === undefined) continue;
      if (!Number.isSafeInteger(v) || v < 0) throw new TypeError(`${k} must be an integer >= 0`);
      query.set(k, String(v));
    }
    const q = query.toString() === '' ? '' : `?${query}`;
    return this.request('GET', `/v1/channels/${segment(channel, 'channel')}/history${q}`);
  }

  /** The live nodes of the cluster. */
  async nodes(): Promise<NodesAnswer> {
    return this.request('GET', '/v1/nodes');
  }

  /**
   * One request with retries. The body (and its idempotency id) is the same
   * on every attempt; a signed request gets a new timestamp and nonce each
   * time, since the relay refuses a nonce it has seen.
   */
  private async request<T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
    const url = new URL(this.base.pathname.replace(/\/$/, '') + path, this.base);
    const signedPath = url.pathname + url.search;
    const text = body === undefined ? '' : JSON.stringify(body);
    const retries = this.options.retries ?? 3;
    for (let attempt = 0; ; attempt++) {
      const headers: Record<string, string> = {};
      if (text !== '') headers['content-type'] = 'application/json';
      if (this.options.keyName === undefined) {
        headers.authorization = `Bearer ${this.options.secret}`;
      } else {
        // A fresh nonce per attempt: the relay accepts each once, so identical
        // requests within one second (two reads, a retry) are all accepted.
        const timestamp = String(Math.floor(Date.now() / 1000));
        const nonce = randomBytes(16).toString('base64url');
        headers[SIGNATURE_HEADERS.key] = this.options.keyName;
        headers[SIGNATURE_HEADERS.timestamp] = timestamp;
        headers[SIGNATURE_HEADERS.nonce] = nonce;
        headers[SIGNATURE_HEADERS.signature] = sign(
          this.options.secret,
          timestamp,
          method,
          signedPath,
          text,
          nonce,
        );
      }
      let error: PublisherError;
      try {
        const res = await this.fetch(url, {
          method,
          headers,
          body: text === '' ? undefined : text,
          signal: AbortSignal.timeout(this.options.timeoutMs ?? 10_000),
        });
        const answer = await readJson(res);
        if (res.ok) return answer as T;
        error = toError(res, answer);
      } catch (err) {
        if (err instanceof PublisherError) throw err;
        error = new PublisherError(
          'network_error',
          `${method} ${url.origin}${signedPath}: ${reason(err)}`,
          0,
        );
      }
      if (!error.retryable || attempt >= retries) throw error;
      const waitMs = error.retryAfter !== undefined ? error.retryAfter * 1000 : 250 * 2 ** attempt;
      if (waitMs > (this.options.maxRetryDelayMs ?? 10_000)) throw error;
      const delay = waitMs * (0.75 + Math.random() / 2);
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}

function checkMessage(message: PublishMessage, where: string): PublishMessage {
  if (message === null || typeof message !== 'object' || Array.isArray(message)) {
    throw new TypeError(`${where} must be an object like { event, data, users }`);
  }
  if (typeof message.event !== 'string' || message.event === '') {
    throw new TypeError(`${where}.event must be the event name the client listens for`);
  }
  return message;
}

function withId(message: PublishMessage): PublishMessage {
  return message.id === undefined ? { ...message, id: randomUUID() } : message;
}

function segment(value: string, what: string): string {
  if (typeof value !== 'string' || value === '') throw new TypeError(`${what} must be a non-empty string`);
  return encodeURIComponent(value);
}

async function readJson(res: Response): Promise<unknown> {
  const text = await res.text();
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function toError(res: Response, answer: unknown): PublisherError {
  const header = res.headers.get('retry-after');
  const retryAfter = header !== null && /^\d+$/.test(header) ? Number(header) : undefined;
  const e = (answer as { error?: { code?: unknown; message?: unknown } } | null)?.error;
  if (e && typeof e.code === 'string' && typeof e.message === 'string') {
    return new PublisherError(e.code as ErrorCode, e.message, res.status, retryAfter);
  }
  // Not the relay answering (a proxy's error page, say).
  const code: ErrorCode = res.status >= 500 ? 'unavailable' : 'bad_request';
  return new PublisherError(code, `HTTP ${res.status} from ${res.url}`, res.status, retryAfter);
}

function reason(err: unknown): string {
  const e = err as Error & { cause?: { code?: string; message?: string } };
  if (e?.name === 'TimeoutError') return 'timed out';
  return e?.cause?.code ?? e?.cause?.message ?? e?.message ?? String(err);
}
