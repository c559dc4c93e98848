import { isIP } from 'node:net';
import { WEBHOOK_EVENT_TYPES, type WebhookEventType } from '../webhooks/types.js';

// The environment, as one schema. Every variable the relay reads is declared
// here once, with its parser, its default and the sentence the README shows;
// the Config type is derived from this table, so a variable cannot be read
// without being documented and validated.

export type Env = Readonly<Record<string, string | undefined>>;

/** Thrown by a parser; the loader prefixes the variable name. */
export class InvalidValue extends Error {}

export interface Variable<T> {
  readonly env: string;
  readonly doc: string;
  /** The default as the README shows it. */
  readonly defaultDoc: string;
  /** `raw` is undefined when the variable is unset or empty (or only unset, with `keepsEmpty`). */
  readonly parse: (raw: string | undefined) => T;
  /** An empty value means something (PUSHRELAY_ECHO_REDIS_PREFIX: no prefix), so it is not read as unset. */
  readonly keepsEmpty?: boolean;
}

function variable<T>(env: string, doc: string, defaultDoc: string, parse: (raw: string | undefined) => T) {
  return { env, doc, defaultDoc, parse } satisfies Variable<T>;
}

function int(env: string, doc: string, def: number, min: number, max: number) {
  return variable(env, doc, String(def), (raw) => {
    if (raw === undefined) return def;
    if (!/^-?\d+$/.test(raw)) throw new InvalidValue(`must be an integer, got "${raw}"`);
    const n = Number(raw);
    if (n < min || n > max) throw new InvalidValue(`must be between ${min} and ${max}, got ${n}`);
    return n;
  });
}

function seconds(env: string, doc: string, def: number, min: number, max: number) {
  return variable(env, doc, String(def), (raw) => {
    if (raw === undefined) return def;
    if (!/^\d+(\.\d+)?$/.test(raw)) throw new InvalidValue(`must be a number of seconds, got "${raw}"`);
    const n = Number(raw);
    if (n < min || n > max) throw new InvalidValue(`must be between ${min} and ${max} seconds, got ${n}`);
    return n;
  });
}

function text(env: string, doc: string, def: string, pattern?: RegExp, patternDoc?: string) {
  return variable(env, doc, def === '' ? '(none)' : def, (raw) => {
    const value = raw ?? def;
    if (pattern && !pattern.test(value)) throw new InvalidValue(`${patternDoc}, got "${value}"`);
    return value;
  });
}

function optional(env: string, doc: string) {
  return variable(env, doc, '(unset)', (raw): string | undefined => raw);
}

function url(env: string, doc: string, protocols: readonly string[]) {
  return variable(env, doc, '(unset)', (raw): URL | undefined => {
    if (raw === undefined) return undefined;
    let parsed: URL;
    try {
      parsed = new URL(raw);
    } catch {
      throw new InvalidValue(`must be a URL (${protocols.join(' or ')}), got "${redactUrl(raw)}"`);
    }
    if (!protocols.includes(parsed.protocol)) {
      throw new InvalidValue(`must use ${protocols.join(' or ')}, got "${parsed.protocol}"`);
    }
    if (parsed.username !== '' || parsed.password !== '') {
      // fetch() refuses such a URL, and its error would print the password in every log line.
      throw new InvalidValue(`must not carry credentials (user:password@), got "${redactUrl(raw)}"`);
    }
    return parsed;
  });
}

function oneOf<const T extends string>(env: string, doc: string, def: T, values: readonly T[]) {
  return variable(env, doc, def, (raw): T => {
    const value = raw ?? def;
    if (!(values as readonly string[]).includes(value)) {
      throw new InvalidValue(`must be one of ${values.join(', ')}, got "${value}"`);
    }
    return value as T;
  });
}

function list(env: string, doc: string) {
  return variable(env, doc, '(empty)', (raw): string[] =>
    raw === undefined
      ? []
      : raw
          .split(',')
          .map((s) => s.trim())
          .filter((s) => s !== ''),
  );
}

/** Fastify's trustProxy: false, true, a hop count, or the addresses and CIDRs of trusted proxies. */
export type TrustProxy = boolean | number | string[];

export function parseTrustProxy(raw: string | undefined): TrustProxy {
  if (raw === undefined || /^(false|0|no|off)$/i.test(raw)) return false;
  if (/^(true|yes|on)$/i.test(raw)) return true;
  if (/^\d{1,2}$/.test(raw)) return Number(raw);
  const list = raw.split(',').map((x) => x.trim());
  for (const entry of list) {
    const [address = '', bits, extra] = entry.split('/');
    const family = isIP(address);
    const maxBits = family === 6 ? 128 : 32;
    if (
      family === 0 ||
      extra !== undefined ||
      (bits !== undefined && !(/^\d+$/.test(bits) && Number(bits) <= maxBits))
    ) {
      throw new InvalidValue(
        `must be false, true, a hop count, or addresses/CIDRs of your proxies; "${entry}" is none`,
      );
    }
  }
  return list;
}

/**
 * A URL as it may be shown in an error or a log line: user information
 * (`user:password@`, up to the last `@`, as a malformed URL may hold more than
 * one) and `password`-like query values become `***`. Works on text that is not
 * a valid URL, which is exactly when it gets printed.
 */
export function redactUrl(raw: string): string {
  return raw
    .replace(/^([a-z][a-z0-9+.-]*:\/\/)?[\s\S]*@/i, (_m, scheme: string | undefined) => `${scheme ?? ''}***@`)
    .replace(/([?&][^=&#]*(?:password|secret|token|key)[^=&#]*=)[^&#]*/gi, '$1***');
}

/** Every URL's user information in free text (an error's message or stack) as `***`. */
export function redactUrls(text: string): string {
  return text.replace(/\b([a-z][a-z0-9+.-]*:\/\/)[^\s/?#"'`]*@/gi, '$1***@');
}

// ---------------------------------------------------------------------------
// Composite values

export interface RedisAddress {
  readonly host: string;
  readonly port: number;
}

interface RedisAuth {
  readonly username?: string;
  readonly password?: string;
}

/** Where Redis is: one server, a Sentinel-managed master, or a Redis Cluster. */
export type RedisTarget =
  | { readonly kind: 'single'; readonly url: URL }
  | (RedisAuth & {
      readonly kind: 'sentinel';
      readonly sentinels: readonly RedisAddress[];
      /** The master name the sentinels monitor. */
      readonly name: string;
      readonly sentinelPassword?: string;
    })
  | (RedisAuth & { readonly kind: 'cluster'; readonly nodes: readonly RedisAddress[] });

const REDIS_SCHEMES = 'redis:, rediss:, redis+sentinel: or redis+cluster:';

/**
 * `new URL` cannot parse a list of hosts, so the Sentinel and Cluster forms
 * are read by hand: `scheme://[user:password@]host:port,host:port[/name][?query]`.
 */
export function parseRedisUrl(raw: string | undefined): RedisTarget | undefined {
  if (raw === undefined) return undefined;
  const scheme = /^([a-z+]+):\/\//.exec(raw)?.[1];
  if (scheme === 'redis' || scheme === 'rediss') {
    let parsed: URL;
    try {
      parsed = new URL(raw);
    } catch {
      throw new InvalidValue(`must be a URL (${REDIS_SCHEMES}), got "${redactUrl(raw)}"`);
    }
    return { kind: 'single', url: parsed };
  }
  if (scheme !== 'redis+sentinel' && scheme !== 'redis+cluster') {
    const shown = scheme ?? redactUrl(raw.split(':')[0] ?? raw);
    throw new InvalidValue(`must use ${REDIS_SCHEMES}, got "${shown}:"`);
  }
  let rest = raw.slice(scheme.length + 3);
  let query = '';
  const q = rest.indexOf('?');
  if (q !== -1) {
    query = rest.slice(q + 1);
    rest = rest.slice(0, q);
  }
  const at = rest.lastIndexOf('@');
  if (at === -1 && raw.includes('@')) {
    // An unencoded ? or # in the password: what follows would be read as hosts and echoed.
    throw new InvalidValue(
      `${scheme}: percent-encode @ : / ? # in the user name and password, got "${redactUrl(raw)}"`,
    );
  }
  const auth: { username?: string; password?: string } = {};
  if (at !== -1) {
    const userinfo = rest.slice(0, at);
    rest = rest.slice(at + 1);
    const colon = userinfo.indexOf(':');
    const user = decode(
      colon === -1 ? userinfo : userinfo.slice(0, colon),
      scheme,
      'the user name or password',
    );
    const password =
      colon === -1 ? '' : decode(userinfo.slice(colon + 1), scheme, 'the user name or password');
    if (user !== '') auth.username = user;
    if (password !== '') auth.password = password;
  }
  const slash = rest.indexOf('/');
  const hostList = slash === -1 ? rest : rest.slice(0, slash);
  const path = slash === -1 ? '' : decode(rest.slice(slash + 1), scheme, 'the master name');
  const addresses = hostList.split(',').map((h) => parseAddress(h.trim(), scheme));
  const params = new URLSearchParams(query);
  if (scheme === 'redis+cluster') {
    if (path !== '')
      throw new InvalidValue(
        `redis+cluster: takes no path (Redis Cluster has only database 0), got "/${path}"`,
      );
    for (const key of params.keys()) throw new InvalidValue(`redis+cluster: unknown option "${key}"`);
    return { kind: 'cluster', nodes: addresses, ...auth };
  }
  if (!/^[A-Za-z0-9_.-]{1,128}$/.test(path)) {
    throw new InvalidValue(
      'redis+sentinel: needs the master name as the path, as in redis+sentinel://host:26379,host:26380/mymaster',
    );
  }
  let sentinelPassword: string | undefined;
  for (const [key, value] of params) {
    if (key === 'sentinel_password') sentinelPassword = value;
    else throw new InvalidValue(`redis+sentinel: unknown option "${key}" (options: sentinel_password)`);
  }
  return {
    kind: 'sentinel',
    sentinels: addresses,
    name: path,
    ...auth,
    ...(sentinelPassword ? { sentinelPassword } : {}),
  };
}

function decode(part: string, scheme: string, what: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    throw new InvalidValue(`${scheme}: ${what} has a malformed %-escape`);
  }
}

function parseAddress(text: string, scheme: string): RedisAddress {
  const m = /^([A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]):(\d{1,5})$/.exec(text);
  const port = Number(m?.[2]);
  if (!m || port < 1 || port > 65535) {
    throw new InvalidValue(`${scheme}: each host must be host:port, got "${text}"`);
  }
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
}

export type Scope = 'publish' | 'read' | 'admin';
export const SCOPES: readonly Scope[] = ['publish', 'read', 'admin'];

export interface PublisherKey {
  readonly name: string;
  readonly secret: string;
  readonly scopes: ReadonlySet<Scope>;
}

export function parseKeys(raw: string | undefined): PublisherKey[] {
  if (raw === undefined) return [];
  const keys: PublisherKey[] = [];
  const names = new Set<string>();
  for (const item of raw.split(',')) {
    const entry = item.trim();
    if (entry === '') continue;
    const parts = entry.split(':');
    if (parts.length < 2 || parts.length > 3) {
      throw new InvalidValue(`each key must be name:secret or name:secret:scope+scope, got ${redact(entry)}`);
    }
    const [name = '', secret = '', scopeList] = parts;
    if (!/^[A-Za-z0-9_.-]{1,64}$/.test(name)) {
      throw new InvalidValue(`key name "${name}" must be 1-64 characters of A-Z a-z 0-9 _ . -`);
    }
    if (secret.length < 8)
      throw new InvalidValue(`the secret of key "${name}" must be at least 8 characters`);
    if (names.has(name)) throw new InvalidValue(`key name "${name}" appears twice`);
    names.add(name);
    let scopes: Set<Scope>;
    if (scopeList === undefined || scopeList === '') {
      scopes = new Set(SCOPES);
    } else {
      scopes = new Set();
      for (const s of scopeList.split('+')) {
        if (!(SCOPES as readonly string[]).includes(s)) {
          throw new InvalidValue(`key "${name}" has unknown scope "${s}" (scopes: ${SCOPES.join(', ')})`);
        }
        scopes.add(s as Scope);
      }
    }
    keys.push({ name, secret, scopes });
  }
  return keys;
}

function redact(entry: string): string {
  // Without a colon the entry may be the secret alone: show none of it.
  if (!entry.includes(':')) return 'an entry without a colon';
  const [name] = entry.split(':');
  return `"${name}:***"`;
}

/** Per channel namespace options (the part of a channel name before the first ':'). */
export interface NamespaceOptions {
  /** Clients may `publish` to channels of this namespace (still subject to their token's patterns unless public). */
  readonly publish: boolean;
  /** Any authenticated client may subscribe, whatever its token's `channels` claim. */
  readonly public: boolean;
  /** Subscribers receive `pushrelay:join` / `pushrelay:leave` notices, once per user cluster-wide. */
  readonly presence: boolean;
  /** Messages kept per channel for recovery (0 turns history off). */
  readonly historySize: number;
  /** Seconds a message stays recoverable. */
  readonly historyTtl: number;
}

const NAMESPACE_KEYS = ['publish', 'public', 'presence', 'history_size', 'history_ttl'] as const;

export function parseNamespaces(raw: string | undefined): Record<string, Partial<NamespaceOptions>> {
  // No prototype: a channel named "constructor" must not find Object's.
  if (raw === undefined) return Object.create(null);
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    throw new InvalidValue('must be a JSON object such as {"chat":{"publish":true,"history_size":500}}');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new InvalidValue('must be a JSON object keyed by namespace');
  }
  const out: Record<string, Partial<NamespaceOptions>> = Object.create(null);
  for (const [ns, opts] of Object.entries(value)) {
    if (!/^[A-Za-z0-9_.-]{1,64}$/.test(ns) || ns === 'user') {
      throw new InvalidValue(`namespace "${ns}" is not a valid namespace name (and "user" is reserved)`);
    }
    if (typeof opts !== 'object' || opts === null || Array.isArray(opts)) {
      throw new InvalidValue(`namespace "${ns}" must map to an object`);
    }
    const o: { -readonly [K in keyof NamespaceOptions]?: NamespaceOptions[K] } = {};
    for (const [k, v] of Object.entries(opts)) {
      if (!(NAMESPACE_KEYS as readonly string[]).includes(k)) {
        throw new InvalidValue(
          `namespace "${ns}" has unknown option "${k}" (options: ${NAMESPACE_KEYS.join(', ')})`,
        );
      }
      if (k === 'history_size' || k === 'history_ttl') {
        if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 1_000_000) {
          throw new InvalidValue(`namespace "${ns}" option "${k}" must be an integer between 0 and 1000000`);
        }
        if (k === 'history_size') o.historySize = v;
        else o.historyTtl = v;
      } else {
        if (typeof v !== 'boolean')
          throw new InvalidValue(`namespace "${ns}" option "${k}" must be true or false`);
        o[k as 'publish' | 'public' | 'presence'] = v;
      }
    }
    out[ns] = o;
  }
  return out;
}

// ---------------------------------------------------------------------------
// The table. Keys are the Config property names; order is the README's order.

export const schema = {
  port: int('PORT', 'TCP port for HTTP and Socket.IO', 8080, 0, 65535),
  host: text('HOST', 'interface to listen on', '0.0.0.0'),
  redis: variable(
    'REDIS_URL',
    '`redis://` or `rediss://` URL of one Redis; `redis+sentinel://[user:password@]host:port,host:port/<master name>[?sentinel_password=...]` for Sentinel; `redis+cluster://[user:password@]host:port,host:port` (seed nodes) for Redis Cluster; unset means standalone (one process, in memory)',
    '(unset)',
    parseRedisUrl,
  ),
  nodeEnv: oneOf(
    'NODE_ENV',
    '`production` refuses insecure settings; `development` and `test` generate missing secrets (any other value is refused, so a typo cannot run development mode)',
    'development',
    ['production', 'development', 'test'],
  ),
  logLevel: oneOf('LOG_LEVEL', 'pino log level', 'info', [
    'fatal',
    'error',
    'warn',
    'info',
    'debug',
    'trace',
    'silent',
  ]),
  keys: variable(
    'PUSHRELAY_KEYS',
    'publisher keys, comma-separated `name:secret` or `name:secret:scope+scope` (scopes `publish`, `read`, `admin`; none listed means all)',
    '(generated outside production)',
    parseKeys,
  ),
  rateLimit: int(
    'PUSHRELAY_RATE_LIMIT',
    'publish requests per key per minute, cluster-wide (0 turns the limit off)',
    6000,
    0,
    100_000_000,
  ),
  jwtSecret: optional(
    'PUSHRELAY_JWT_SECRET',
    'HS256 secret for client tokens (generated outside production)',
  ),
  jwtPublicKey: optional(
    'PUSHRELAY_JWT_PUBLIC_KEY',
    'PEM public key (RSA for RS256, P-256 for ES256) verifying client tokens; `\\n` escapes allowed',
  ),
  jwksUrl: url(
    'PUSHRELAY_JWKS_URL',
    'JWKS URL for RS256/ES256 client tokens (cached, follows key rotation)',
    ['https:', 'http:'],
  ),
  jwtAudience: optional('PUSHRELAY_JWT_AUDIENCE', 'required `aud` of client tokens, when set'),
  jwtIssuer: optional('PUSHRELAY_JWT_ISSUER', 'required `iss` of client tokens, when set'),
  corsOrigins: list(
    'PUSHRELAY_CORS_ORIGINS',
    'allowed browser origins for HTTP CORS and the WebSocket `Origin` check, comma-separated; `*` allows any (refused in production)',
  ),
  prefix: text(
    'PUSHRELAY_PREFIX',
    'prefix of every Redis key and channel',
    'pushrelay',
    /^[A-Za-z0-9_.-]{1,32}$/,
    'must be 1-32 characters of A-Z a-z 0-9 _ . -',
  ),
  drainSeconds: seconds(
    'PUSHRELAY_DRAIN_SECONDS',
    'on SIGTERM, how long disconnects are spread over while HTTP keeps serving',
    10,
    0,
    3600,
  ),
  nodeId: text(
    'PUSHRELAY_NODE_ID',
    'this node’s name in presence and metrics (default: hostname and a random suffix)',
    '',
    /^([a-z0-9][a-z0-9-]{0,62})?$/,
    'must be 1-63 characters of a-z 0-9 - (starting with a letter or digit)',
  ),
  maxPayloadBytes: int(
    'PUSHRELAY_MAX_PAYLOAD_BYTES',
    'largest HTTP body and Socket.IO packet accepted, in bytes',
    65536,
    1024,
    16 * 1024 * 1024,
  ),
  requestTimeoutMs: int(
    'PUSHRELAY_REQUEST_TIMEOUT_MS',
    'a request’s headers and body must arrive within this many milliseconds, else 408 and the connection closes (slow clients cannot hold sockets open); WebSockets and long-polls are not affected',
    15_000,
    1000,
    600_000,
  ),
  headersTimeoutMs: int(
    'PUSHRELAY_HEADERS_TIMEOUT_MS',
    'a request’s line and headers must arrive within this many milliseconds (at most `PUSHRELAY_REQUEST_TIMEOUT_MS`)',
    10_000,
    1000,
    600_000,
  ),
  keepAliveTimeoutMs: int(
    'PUSHRELAY_KEEP_ALIVE_TIMEOUT_MS',
    'an idle keep-alive HTTP connection is closed after this many milliseconds (keep it above your load balancer’s idle timeout)',
    72_000,
    1000,
    3_600_000,
  ),
  maxJsonDepth: int(
    'PUSHRELAY_MAX_JSON_DEPTH',
    'deepest nesting accepted in a JSON body or message',
    32,
    2,
    1000,
  ),
  maxChannels: int('PUSHRELAY_MAX_CHANNELS', 'channels one socket may be subscribed to', 128, 1, 100_000),
  socketRateLimit: int(
    'PUSHRELAY_SOCKET_RATE_LIMIT',
    'client requests (subscribe, publish, ...) one socket may make per second; bursts up to twice that',
    20,
    1,
    100_000,
  ),
  maxConnections: int(
    'PUSHRELAY_MAX_CONNECTIONS',
    'sockets one node accepts; past it handshakes answer 503 and clients retry elsewhere',
    50_000,
    1,
    10_000_000,
  ),
  preauthTimeoutMs: int(
    'PUSHRELAY_PREAUTH_TIMEOUT_MS',
    'how long a handshake may stay open without authenticating (Socket.IO `connectTimeout`); it holds no connection slot meanwhile',
    5000,
    500,
    60_000,
  ),
  preauthMax: int(
    'PUSHRELAY_PREAUTH_MAX',
    'unauthenticated handshakes one node keeps open at once (from all addresses); past it the oldest is closed to make room for the new one',
    1024,
    1,
    1_000_000,
  ),
  preauthPerAddress: int(
    'PUSHRELAY_PREAUTH_PER_ADDRESS',
    'handshakes one client address (per PUSHRELAY_TRUST_PROXY) may have open and not yet authenticated; past it its handshakes are refused `rate_limited`, without spending the handshake rate other clients need',
    128,
    1,
    1_000_000,
  ),
  connectRate: int(
    'PUSHRELAY_CONNECT_RATE',
    'new socket handshakes one node accepts per second (a reconnect storm is spread out, not absorbed at once)',
    500,
    1,
    1_000_000,
  ),
  trustProxy: variable(
    'PUSHRELAY_TRUST_PROXY',
    'trust X-Forwarded-For from: `false`, `true` (any), a hop count, or proxy addresses/CIDRs, comma-separated',
    'false',
    parseTrustProxy,
  ),
  socketBufferBytes: int(
    'PUSHRELAY_SOCKET_BUFFER_BYTES',
    'outgoing bytes a socket may have waiting before it is disconnected as a slow consumer (it reconnects and recovers)',
    1024 * 1024,
    64 * 1024,
    1024 * 1024 * 1024,
  ),
  historySize: int(
    'PUSHRELAY_HISTORY_SIZE',
    'messages kept per channel for recovery (0 turns history off); per namespace in `PUSHRELAY_NAMESPACES`',
    100,
    0,
    1_000_000,
  ),
  historyTtl: int(
    'PUSHRELAY_HISTORY_TTL_SECONDS',
    'seconds a message stays recoverable; per namespace in `PUSHRELAY_NAMESPACES`',
    300,
    1,
    30 * 86400,
  ),
  namespaces: variable(
    'PUSHRELAY_NAMESPACES',
    'per-namespace options as JSON: `{"chat":{"publish":true,"public":false,"presence":true,"history_size":500,"history_ttl":3600}}`',
    '{}',
    parseNamespaces,
  ),
  idempotencySeconds: int(
    'PUSHRELAY_IDEMPOTENCY_SECONDS',
    'how long a publish `id` is remembered: a repeat within it is delivered once',
    300,
    1,
    86400,
  ),
  offlineWebhook: url(
    'PUSHRELAY_OFFLINE_WEBHOOK',
    'URL called (POST, signed) when a publish to a user finds none of their sockets online',
    ['https:', 'http:'],
  ),
  offlineWebhookSecret: optional(
    'PUSHRELAY_OFFLINE_WEBHOOK_SECRET',
    'secret signing offline webhook calls (required with PUSHRELAY_OFFLINE_WEBHOOK)',
  ),
  webhooks: variable(
    'PUSHRELAY_WEBHOOKS',
    'lifecycle webhook receiver URLs, comma-separated; each gets every event kind of `PUSHRELAY_WEBHOOK_EVENTS`, signed with `PUSHRELAY_WEBHOOK_SECRET`',
    '(none)',
    (raw): URL[] => {
      if (raw === undefined) return [];
      return raw
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s !== '')
        .map((s) => {
          let u: URL;
          try {
            u = new URL(s);
          } catch {
            throw new InvalidValue(`must be http: or https: URLs, got "${redactUrl(s)}"`);
          }
          if (u.protocol !== 'http:' && u.protocol !== 'https:')
            throw new InvalidValue(`must be http: or https: URLs, got "${u.protocol}"`);
          if (u.username !== '' || u.password !== '') {
            // fetch() refuses such a URL, and its error would print the password in every log line.
            throw new InvalidValue(`must not carry credentials (user:password@), got "${redactUrl(s)}"`);
          }
          return u;
        });
    },
  ),
  webhookEvents: variable(
    'PUSHRELAY_WEBHOOK_EVENTS',
    'event kinds sent to `PUSHRELAY_WEBHOOKS`, comma-separated: `user.online`, `user.offline`, `channel.occupied`, `channel.vacated`, `member.added`, `member.removed`, `message.undelivered`',
    '(all)',
    (raw): WebhookEventType[] => {
      if (raw === undefined) return [...WEBHOOK_EVENT_TYPES];
      const kinds = raw
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s !== '');
      for (const k of kinds) {
        if (!(WEBHOOK_EVENT_TYPES as readonly string[]).includes(k))
          throw new InvalidValue(`unknown event kind "${k}" (known: ${WEBHOOK_EVENT_TYPES.join(', ')})`);
      }
      return kinds as WebhookEventType[];
    },
  ),
  webhookSecret: optional(
    'PUSHRELAY_WEBHOOK_SECRET',
    'secret signing every lifecycle webhook call (required with `PUSHRELAY_WEBHOOKS`)',
  ),
  webhookDebounceSeconds: seconds(
    'PUSHRELAY_WEBHOOK_DEBOUNCE_SECONDS',
    'a user (or channel, or member) gone and back within this time produces no `offline`/`online` (`vacated`/`occupied`, `removed`/`added`) pair; those events are sent this much later',
    5,
    0,
    3600,
  ),
  webhookTimeoutSeconds: seconds(
    'PUSHRELAY_WEBHOOK_TIMEOUT_SECONDS',
    'a webhook call not answered within this time is retried',
    10,
    1,
    120,
  ),
  webhookRetrySeconds: seconds(
    'PUSHRELAY_WEBHOOK_RETRY_SECONDS',
    'how long webhook events are retried (backoff with jitter, up to 5 minutes apart) before they go to the dead letters',
    86_400,
    1,
    30 * 86_400,
  ),
  webhookMaxQueueBytes: int(
    'PUSHRELAY_WEBHOOK_MAX_QUEUE_BYTES',
    'bytes of webhook events of every kind (their JSON, once per receiver) queued at once, in memory or in Redis; past it new ones are refused (never sent) and counted by type; the presence transitions still happen',
    64 * 1024 * 1024,
    1024,
    16 * 1024 * 1024 * 1024,
  ),
  webhookDeadLetters: int(
    'PUSHRELAY_WEBHOOK_DEAD_LETTERS',
    'webhook dead letters kept (each one key’s events given up on); the oldest go first',
    10_000,
    1,
    1_000_000,
  ),
  redisWaitReplicas: int(
    'PUSHRELAY_REDIS_WAIT_REPLICAS',
    'replicas that must hold a publish before it is answered 2xx and fanned out (Redis `WAIT`); 0 answers once the master has it',
    0,
    0,
    16,
  ),
  redisWaitMs: int(
    'PUSHRELAY_REDIS_WAIT_MS',
    'how long a publish waits for `PUSHRELAY_REDIS_WAIT_REPLICAS` replicas before answering 503',
    500,
    1,
    60_000,
  ),
  redisTimeoutMs: int(
    'PUSHRELAY_REDIS_TIMEOUT_MS',
    'a Redis that answers neither a command nor the PING sent every half second within this many ms counts as unavailable: `/readyz` 503, `pushrelay_redis_connected` 0, publishes 503 at once, new sockets refused (a hung Redis keeps its connections open)',
    2000,
    100,
    60_000,
  ),
  presenceTtl: int(
    'PUSHRELAY_PRESENCE_TTL_SECONDS',
    'a node that stops heartbeating stops counting in presence after this many seconds, and a live node then removes its sockets (their `pushrelay:leave` notices follow within a third of this)',
    6,
    3,
    300,
  ),
  maxUserInfoBytes: int(
    'PUSHRELAY_MAX_USER_INFO_BYTES',
    'largest `user_info` of a presence member, in bytes of JSON (a token carrying a larger one is refused; from elsewhere it is dropped and counted)',
    4096,
    64,
    65536,
  ),
  ingestPartitions: int(
    'PUSHRELAY_INGEST_PARTITIONS',
    'partitions of the durable ingest stream (`XADD <prefix>:publish`): the most nodes its work spreads over; the first node to start fixes the count for the cluster',
    16,
    1,
    1024,
  ),
  ingestMaxInflight: int(
    'PUSHRELAY_INGEST_MAX_INFLIGHT',
    'raw pub/sub ingest messages (`PUBLISH`, ActionCable, AnyCable) one node holds queued or being published (64 at a time); past it new ones are dropped and counted (`pushrelay_ingest_messages_total{outcome="dropped"}`); at most this many times `PUSHRELAY_MAX_PAYLOAD_BYTES` held',
    1000,
    1,
    1_000_000,
  ),
  ingestDeadLetters: int(
    'PUSHRELAY_INGEST_DEAD_LETTERS',
    'dead letters kept in `<prefix>:publish:dead` (approximately; older ones are trimmed); 0 keeps none (they are still counted and logged)',
    10_000,
    0,
    10_000_000,
  ),
  actioncablePrefix: variable(
    'PUSHRELAY_ACTIONCABLE_PREFIX',
    'the `channel_prefix` of a Rails app’s `cable.yml` (Redis adapter): its `ActionCable.server.broadcast(stream, message)` is delivered as event `message` on the channel named `<stream>`; unset means off',
    '(unset)',
    (raw): string | undefined => {
      if (raw === undefined) return undefined;
      if (!/^[\x21-\x7e]{1,100}$/.test(raw)) {
        throw new InvalidValue(`must be 1-100 printable characters without spaces, got "${raw}"`);
      }
      return raw;
    },
  ),
  anycable: variable(
    'PUSHRELAY_ANYCABLE',
    'accept AnyCable broadcasts (`on` or `off`): `PUBLISH` on and `XADD` to `PUSHRELAY_ANYCABLE_CHANNEL`, and `POST /_broadcast` when `PUSHRELAY_ANYCABLE_BROADCAST_KEY` is set',
    'off',
    (raw): boolean => {
      if (raw === undefined || raw === 'off') return false;
      if (raw === 'on') return true;
      throw new InvalidValue(`must be on or off, got "${raw}"`);
    },
  ),
  anycableChannel: text(
    'PUSHRELAY_ANYCABLE_CHANNEL',
    'AnyCable’s `redis_channel`: the pub/sub channel of its Redis adapter and the stream of its redisx adapter',
    '__anycable__',
    /^[\x21-\x7e]{1,100}$/,
    'must be 1-100 printable characters without spaces',
  ),
  anycableBroadcastKey: optional(
    'PUSHRELAY_ANYCABLE_BROADCAST_KEY',
    'AnyCable’s `broadcast_key`: `POST /_broadcast` needs `Authorization: Bearer <it>`; unset, the route is not served',
  ),
  echo: variable(
    'PUSHRELAY_ECHO',
    'accept Laravel Echo’s Socket.IO protocol (`on` or `off`): tokenless sockets, `subscribe`/`unsubscribe {channel, auth}`, events as `emit(event, channel, data)`, whispers, `presence:*` (see "Coming from laravel-echo-server")',
    'off',
    (raw): boolean => {
      if (raw === undefined || raw === 'off') return false;
      if (raw === 'on') return true;
      throw new InvalidValue(`must be on or off, got "${raw}"`);
    },
  ),
  echoAuthUrl: url(
    'PUSHRELAY_ECHO_AUTH_URL',
    'the Laravel app’s channel auth endpoint (`https://app.example/broadcasting/auth`), POSTed `channel_name` and `socket_id` with the browser’s Cookie for `private-*` and `presence-*` channels; unset, those channels are refused',
    ['http:', 'https:'],
  ),
  echoAuthTimeout: seconds(
    'PUSHRELAY_ECHO_AUTH_TIMEOUT_SECONDS',
    'how long a call to `PUSHRELAY_ECHO_AUTH_URL` may take before the subscription is refused (`subscription_error` with status 0)',
    10,
    0.1,
    120,
  ),
  echoAuthMaxInflight: int(
    'PUSHRELAY_ECHO_AUTH_MAX_INFLIGHT',
    'calls to `PUSHRELAY_ECHO_AUTH_URL` one node makes at once; past it a subscription is refused with status 429',
    256,
    1,
    100_000,
  ),
  echoAuthMaxPerSocket: int(
    'PUSHRELAY_ECHO_AUTH_MAX_PER_SOCKET',
    'calls to `PUSHRELAY_ECHO_AUTH_URL` one socket may have in flight; past it its subscription is refused with status 429',
    8,
    1,
    1000,
  ),
  echoMaxPerAddress: int(
    'PUSHRELAY_ECHO_MAX_PER_ADDRESS',
    'connected Laravel Echo sockets (they carry no token) one client address (per PUSHRELAY_TRUST_PROXY) may hold on one node; past it its new ones are refused `rate_limited`; 0: no cap',
    256,
    0,
    10_000_000,
  ),
  echoRedisPrefix: {
    env: 'PUSHRELAY_ECHO_REDIS_PREFIX',
    doc: "take Laravel’s Redis broadcaster: the Redis prefix of the app (`database.redis.options.prefix`, by default `REDIS_PREFIX` = `Str::slug(APP_NAME, '_').'_database_'`); its `{event, data, socket}` on `<prefix><channel>` reaches channel `<channel>`; set but empty means no prefix, unset means off",
    defaultDoc: '(unset)',
    keepsEmpty: true,
    parse: (raw: string | undefined): string | undefined => {
      if (raw === undefined) return undefined;
      if (!/^[\x21-\x7e]{0,100}$/.test(raw)) {
        throw new InvalidValue(`must be 0-100 printable characters without spaces, got "${raw}"`);
      }
      return raw;
    },
  } satisfies Variable<string | undefined>,
  echoClients: variable(
    'PUSHRELAY_ECHO_CLIENTS',
    'laravel-echo-server’s `clients`: `appId:key` pairs, comma-separated, for its HTTP API (`POST /apps/:appId/events` and the read routes, with `?auth_key=` or `Authorization: Bearer`); empty, the API is not served',
    '(empty)',
    (raw): { appId: string; key: string }[] => {
      if (raw === undefined) return [];
      return raw
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s !== '')
        .map((pair) => {
          const at = pair.indexOf(':');
          const appId = pair.slice(0, at);
          const key = pair.slice(at + 1);
          if (at <= 0 || key === '' || !/^[A-Za-z0-9_.-]{1,100}$/.test(appId)) {
            throw new InvalidValue(
              // Without a colon the entry may be the key alone: show none of it.
              `each entry must be appId:key (appId of A-Z a-z 0-9 _ . -), got ${at > 0 ? `"${pair.slice(0, at)}:..."` : 'an entry without a colon'}`,
            );
          }
          return { appId, key };
        });
    },
  ),
  statsIntervalSeconds: int(
    'PUSHRELAY_STATS_INTERVAL_SECONDS',
    'how often each node samples its own rates for the console charts (`GET /v1/admin/stats`); the last 15 minutes of samples are kept, in Redis in a cluster',
    5,
    1,
    60,
  ),
  console: variable(
    'PUSHRELAY_CONSOLE',
    'serve the web console at `/console` (`on` or `off`); its data needs a publisher key either way',
    '(on outside production)',
    (raw): boolean | undefined => {
      if (raw === undefined) return undefined;
      if (raw === 'on') return true;
      if (raw === 'off') return false;
      throw new InvalidValue(`must be on or off, got "${raw}"`);
    },
  ),
} satisfies Record<string, Variable<unknown>>;

export type Schema = typeof schema;
export type Settings = { readonly [K in keyof Schema]: ReturnType<Schema[K]['parse']> };

/** Every variable name the relay reads; anything else under PUSHRELAY_ is reported. */
export const KNOWN_VARIABLES: ReadonlySet<string> = new Set(Object.values(schema).map((v) => v.env));

/**
 * What the `pushrelay` CLI and the publisher SDK read, never the relay. They
 * often sit in the same shell as `npm start`, so the relay ignores them
 * instead of refusing to start.
 */
export const PUBLISHER_VARIABLES: ReadonlySet<string> = new Set([
  'PUSHRELAY_URL',
  'PUSHRELAY_SECRET',
  'PUSHRELAY_KEY_NAME',
]);
