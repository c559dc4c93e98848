import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { DevSecrets } from './dev-secrets.js';
import {
  type Env,
  InvalidValue,
  KNOWN_VARIABLES,
  type NamespaceOptions,
  PUBLISHER_VARIABLES,
  type PublisherKey,
  SCOPES,
  type Settings,
  schema,
} from './schema.js';

export { DEV_SECRETS_FILE, type DevSecrets, loadDevSecrets } from './dev-secrets.js';
export type { Env, NamespaceOptions, PublisherKey, RedisAddress, RedisTarget, Scope } from './schema.js';
export { redactUrl, redactUrls, schema } from './schema.js';

export interface Config extends Settings {
  /** REDIS_URL when it names one Redis server (redis: or rediss:). */
  readonly redisUrl: URL | undefined;
  readonly mode: 'standalone' | 'cluster';
  readonly production: boolean;
  /** Whether /console is served: PUSHRELAY_CONSOLE, else on outside production. */
  readonly console: boolean;
  readonly nodeId: string;
  /**
   * Secrets made up because none were configured (development only); logged
   * once. `file` is where they are kept for the next start and other nodes.
   */
  readonly generated: { readonly key?: PublisherKey; readonly jwtSecret?: string; readonly file?: string };
  /** Options of the namespace a channel belongs to, defaults filled in. */
  readonly namespace: (channel: string) => NamespaceOptions;
}

/** Every problem found in the environment, each naming its variable. */
export class ConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`invalid configuration:\n  ${problems.join('\n  ')}`);
    this.name = 'ConfigError';
  }
}

/** The shortest secret production accepts for publisher keys and the HS256 token secret. */
export const PRODUCTION_MIN_SECRET = 32;

/**
 * Why a secret must not be used in production, if it must not: too short,
 * one of the placeholders shipped in examples, compose and manifests, or too
 * repetitive to be random.
 */
export function weakSecret(secret: string): string | undefined {
  if (secret.length < PRODUCTION_MIN_SECRET) return `is shorter than ${PRODUCTION_MIN_SECRET} characters`;
  if (
    /not.for.production|change.?me|example|placeholder|replace.?me|your.?secret|openssl|[<>]/i.test(secret)
  ) {
    return 'is a placeholder from the documentation or examples';
  }
  if (new Set(secret).size < 10)
    return 'has fewer than 10 distinct characters: use a random value (openssl rand -hex 32)';
  return undefined;
}

export interface LoadOptions {
  /**
   * Where development secrets come from when none are configured (main.ts:
   * the checkout's stored ones); random for this call when absent.
   */
  readonly devSecrets?: () => DevSecrets;
}

/**
 * Reads and validates the environment once. Reports every problem at once
 * rather than the first, so a broken deployment is fixed in one round.
 */
export function loadConfig(env: Env, options: LoadOptions = {}): Config {
  const problems: string[] = [];
  const values: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(schema)) {
    const raw = env[v.env];
    const keepsEmpty = 'keepsEmpty' in v && v.keepsEmpty === true;
    try {
      values[key] = v.parse(raw === undefined || (raw.trim() === '' && !keepsEmpty) ? undefined : raw.trim());
    } catch (err) {
      if (!(err instanceof InvalidValue)) throw err;
      problems.push(`${v.env}: ${err.message}`);
    }
  }
  for (const name of Object.keys(env)) {
    if (name.startsWith('PUSHRELAY_') && !KNOWN_VARIABLES.has(name) && !PUBLISHER_VARIABLES.has(name)) {
      const hint = closest(name);
      problems.push(`${name}: unknown variable${hint ? ` (did you mean ${hint}?)` : ''}`);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);

  const s = values as unknown as Settings;
  const production = s.nodeEnv === 'production';
  const generated: { key?: PublisherKey; jwtSecret?: string; file?: string } = {};
  let keys = s.keys;
  let jwtSecret = s.jwtSecret;
  const tokenVerifiers = [s.jwtSecret, s.jwtPublicKey, s.jwksUrl].filter((x) => x !== undefined).length;

  if (tokenVerifiers > 1) {
    problems.push(
      'PUSHRELAY_JWT_SECRET, PUSHRELAY_JWT_PUBLIC_KEY, PUSHRELAY_JWKS_URL: set exactly one way to verify client tokens',
    );
  }
  if (s.headersTimeoutMs > s.requestTimeoutMs) {
    problems.push(
      `PUSHRELAY_HEADERS_TIMEOUT_MS: ${s.headersTimeoutMs} is more than PUSHRELAY_REQUEST_TIMEOUT_MS (${s.requestTimeoutMs}); the headers are part of the request`,
    );
  }
  if (s.offlineWebhook !== undefined && s.offlineWebhookSecret === undefined) {
    problems.push(
      'PUSHRELAY_OFFLINE_WEBHOOK_SECRET: required with PUSHRELAY_OFFLINE_WEBHOOK (the app verifies calls with it)',
    );
  }
  if (s.webhooks.length > 0 && s.webhookSecret === undefined) {
    problems.push(
      'PUSHRELAY_WEBHOOK_SECRET: required with PUSHRELAY_WEBHOOKS (receivers verify calls with it)',
    );
  }
  if (s.actioncablePrefix !== undefined) {
    if (!s.redis) problems.push('PUSHRELAY_ACTIONCABLE_PREFIX: needs REDIS_URL (Rails publishes on Redis)');
    const ours = `${s.prefix}:`;
    const theirs = `${s.actioncablePrefix}:`;
    if (theirs.startsWith(ours) || ours.startsWith(theirs)) {
      problems.push(
        `PUSHRELAY_ACTIONCABLE_PREFIX: "${s.actioncablePrefix}" overlaps PUSHRELAY_PREFIX "${s.prefix}" (Rails' channels would mix with the relay's own); give cable.yml its own channel_prefix`,
      );
    }
  }
  if (s.echoRedisPrefix !== undefined && !s.redis) {
    problems.push('PUSHRELAY_ECHO_REDIS_PREFIX: needs REDIS_URL (Laravel broadcasts on Redis)');
  }
  if (s.echoAuthUrl !== undefined && !s.echo) {
    problems.push(
      'PUSHRELAY_ECHO_AUTH_URL: needs PUSHRELAY_ECHO=on (only Echo sockets are authorized by the app)',
    );
  }
  if (production) {
    for (const c of s.echoClients) {
      const weak = weakSecret(c.key);
      if (weak) problems.push(`PUSHRELAY_ECHO_CLIENTS: the key of app "${c.appId}" ${weak}`);
    }
  }
  if (s.anycable) {
    if (s.anycableChannel.startsWith(`${s.prefix}:`)) {
      problems.push(
        `PUSHRELAY_ANYCABLE_CHANNEL: "${s.anycableChannel}" is inside PUSHRELAY_PREFIX "${s.prefix}:", the relay's own names`,
      );
    }
    if (s.actioncablePrefix !== undefined && s.anycableChannel.startsWith(`${s.actioncablePrefix}:`)) {
      problems.push(
        'PUSHRELAY_ANYCABLE_CHANNEL: matches PUSHRELAY_ACTIONCABLE_PREFIX, so it would be taken twice',
      );
    }
    if (production && s.anycableBroadcastKey !== undefined) {
      const weak = weakSecret(s.anycableBroadcastKey);
      if (weak) problems.push(`PUSHRELAY_ANYCABLE_BROADCAST_KEY: ${weak}`);
    }
  }
  if (production) {
    if (keys.length === 0)
      problems.push('PUSHRELAY_KEYS: required in production (no publisher could publish)');
    for (const k of keys) {
      // The same check as every other secret: the compose placeholder or 40 × "a" must not start.
      const weak = weakSecret(k.secret);
      if (weak) problems.push(`PUSHRELAY_KEYS: the secret of key "${k.name}" ${weak}`);
    }
    if (tokenVerifiers === 0) {
      problems.push(
        'PUSHRELAY_JWT_SECRET: required in production (or PUSHRELAY_JWT_PUBLIC_KEY / PUSHRELAY_JWKS_URL); clients could not be authenticated',
      );
    }
    const weakJwt = jwtSecret === undefined ? undefined : weakSecret(jwtSecret);
    if (weakJwt) problems.push(`PUSHRELAY_JWT_SECRET: ${weakJwt}`);
    const weakHook = s.offlineWebhookSecret === undefined ? undefined : weakSecret(s.offlineWebhookSecret);
    if (weakHook) problems.push(`PUSHRELAY_OFFLINE_WEBHOOK_SECRET: ${weakHook}`);
    const weakHooks = s.webhookSecret === undefined ? undefined : weakSecret(s.webhookSecret);
    if (weakHooks) problems.push(`PUSHRELAY_WEBHOOK_SECRET: ${weakHooks}`);
    if (s.corsOrigins.length === 0 || s.corsOrigins.includes('*')) {
      problems.push(
        'PUSHRELAY_CORS_ORIGINS: production needs an explicit list of browser origins (not empty, not *); it is what stops cross-site WebSocket hijacking',
      );
    }
  } else if (keys.length === 0 || tokenVerifiers === 0) {
    const dev = options.devSecrets?.() ?? {
      publisherSecret: randomBytes(24).toString('hex'),
      jwtSecret: randomBytes(32).toString('hex'),
    };
    if (dev.file !== undefined) generated.file = dev.file;
    if (keys.length === 0) {
      const key: PublisherKey = { name: 'dev', secret: dev.publisherSecret, scopes: new Set(SCOPES) };
      keys = [key];
      generated.key = key;
    }
    if (tokenVerifiers === 0) {
      jwtSecret = dev.jwtSecret;
      generated.jwtSecret = jwtSecret;
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);

  const nodeId = s.nodeId !== '' ? s.nodeId : defaultNodeId();
  const namespaceCache = new Map<string, NamespaceOptions>();
  const namespace = (channel: string): NamespaceOptions => {
    // The namespace is the part before the first ':', or the whole name: "news" and "news:eu" share one.
    const colon = channel.indexOf(':');
    const ns = colon === -1 ? channel : channel.slice(0, colon);
    let opts = namespaceCache.get(ns);
    if (opts === undefined) {
      const o = s.namespaces[ns] ?? {};
      opts = Object.freeze({
        publish: o.publish ?? false,
        public: o.public ?? false,
        presence: o.presence ?? false,
        historySize: o.historySize ?? s.historySize,
        historyTtl: o.historyTtl ?? s.historyTtl,
      });
      if (namespaceCache.size < 10_000) namespaceCache.set(ns, opts);
    }
    return opts;
  };

  return Object.freeze({
    ...s,
    keys,
    jwtSecret,
    redisUrl: s.redis?.kind === 'single' ? s.redis.url : undefined,
    mode: s.redis ? 'cluster' : 'standalone',
    production,
    console: s.console ?? !production,
    nodeId,
    generated,
    namespace,
  });
}

function defaultNodeId(): string {
  const host =
    hostname()
      .toLowerCase()
      .replace(/[^a-z0-9-]/g, '-')
      .slice(0, 40) || 'node';
  return `${host}-${randomBytes(3).toString('hex')}`;
}

/** The known variable one edit away from a typo, if any. */
function closest(name: string): string | undefined {
  let best: string | undefined;
  let bestDistance = 3;
  for (const known of KNOWN_VARIABLES) {
    const d = distance(name, known);
    if (d < bestDistance) {
      best = known;
      bestDistance = d;
    }
  }
  return best;
}

function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length]!;
}
