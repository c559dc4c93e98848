import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { PublisherKey } from '../config/index.js';
import { RelayError } from '../errors.js';
import type { Ingest, PublishResult } from '../ingest/ingest.js';
import { decodeUtf8, parseJsonText } from '../ingest/json.js';
import { BatchBody, compile, describeAjvError, PublishBody } from '../ingest/schema.js';
import type { Metrics } from '../metrics/index.js';
import { bearerKeys } from './auth.js';
import { toRelayError } from './errors.js';
import { batchAnswer, publisherScope } from './publish.js';
import type { RouteLimiter } from './ratelimit.js';

// The two routes a busy app calls thousands of times a second, POST
// /v1/publish and /v1/batch, answered straight from node:http when the
// request is the ordinary kind: JSON, `Authorization: Bearer` with a key that
// may publish, a Content-Length within the limit. That skips Fastify's
// per-request work (request and reply objects, hook chain, child logger,
// serializer), which was a third of a targeted publish. The checks are the
// ones the Fastify route runs, in the same order and with the same errors:
// body (UTF-8, depth, forbidden keys), schema, rate limit, publish. Anything
// else (forms, Basic, signed requests, a bad key, chunked bodies, other
// routes) goes to Fastify untouched, which answers it as before.

export interface FastPathDeps {
  readonly keys: readonly PublisherKey[];
  readonly ingest: Ingest;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly maxPayloadBytes: number;
  readonly maxJsonDepth: number;
  /** The routes' limiters and the limit; undefined when the limit is off. */
  readonly rateLimit?: {
    readonly max: number;
    readonly windowMs: number;
    readonly publish: RouteLimiter;
    readonly batch: RouteLimiter;
    readonly onExceeded: () => void;
  };
}

const validatePublish = compile<PublishBody>(PublishBody);
const validateBatch = compile<BatchBody>(BatchBody);
const JSON_TYPE = /^application\/json(?:;\s*charset=("?)utf-8\1)?$/i;

/**
 * Puts the fast path in front of the server's request listeners (Fastify's,
 * behind Socket.IO's). Call once every listener is attached.
 */
export function installFastPath(server: Server, deps: FastPathDeps): void {
  const bearerKey = bearerKeys(deps.keys);
  // Keys with the publish scope, and their idempotency scope, computed once.
  const scopes = new Map(deps.keys.filter((k) => k.scopes.has('publish')).map((k) => [k, publisherScope(k)]));
  const listeners = server.listeners('request') as ((req: IncomingMessage, res: ServerResponse) => void)[];
  server.removeAllListeners('request');
  const slow = (req: IncomingMessage, res: ServerResponse) => {
    for (const l of listeners) l.call(server, req, res);
  };
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const route =
      req.method === 'POST'
        ? req.url === '/v1/publish'
          ? 'publish'
          : req.url === '/v1/batch'
            ? 'batch'
            : undefined
        : undefined;
    if (route === undefined) return slow(req, res);
    const h = req.headers;
    const length = Number(h['content-length']);
    const auth = h.authorization;
    if (
      auth === undefined ||
      h['transfer-encoding'] !== undefined ||
      !(length > 0 && length <= deps.maxPayloadBytes) ||
      !JSON_TYPE.test(h['content-type'] ?? '')
    ) {
      return slow(req, res);
    }
    // Not Bearer, unknown keys and keys without the publish scope get Fastify's answers.
    const key = bearerKey(auth);
    const scope = key ? scopes.get(key) : undefined;
    if (scope === undefined) return slow(req, res);
    readBody(req, length, (body) => {
      handle(route, scope, body, res, deps);
    });
  });
}

/** Reads exactly `length` bytes (node's parser already holds the request to its Content-Length). */
function readBody(req: IncomingMessage, length: number, done: (body: Buffer) => void): void {
  const chunks: Buffer[] = [];
  let got = 0;
  req.on('data', (chunk: Buffer) => {
    got += chunk.length;
    chunks.push(chunk);
  });
  req.on('end', () => {
    if (got !== length) return; // the client went away mid-body: nobody to answer
    done(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, got));
  });
  req.on('error', () => {});
}

/**
 * Answers in the request's own turn when nothing waits (standalone, the
 * limiter holding quota, no idempotency id): no promise per request. In a
 * cluster the same publish waits only on its script call's promise. Anything
 * else that would wait continues in `finish`, with the same checks and answers.
 */
function handle(
  route: 'publish' | 'batch',
  scope: string,
  raw: Buffer,
  res: ServerResponse,
  deps: FastPathDeps,
): void {
  let limited: Limited | undefined;
  try {
    const value = parseJsonText(decodeUtf8(raw), deps.maxJsonDepth);
    const validate = route === 'publish' ? validatePublish : validateBatch;
    if (!validate(value)) throw new RelayError('invalid_body', describeAjvError(validate.errors, 'body'));
    if (deps.rateLimit) {
      const taken = take(deps.rateLimit, route, scope);
      // The limiter answers at once while this node holds quota.
      if (taken instanceof Promise) {
        void finish(route, scope, value, taken, res, deps);
        return;
      }
      limited = taken;
      checkLimit(deps.rateLimit, limited);
    }
    if (route === 'publish') {
      const result = deps.ingest.publishNow(value as PublishBody, 'http', { scope });
      if (result !== undefined) {
        send(res, 200, resultJson(result), limited, deps.rateLimit?.max);
        return;
      }
      // In a cluster: one promise, the script call's, instead of finish()'s and publish()'s.
      const counted = deps.ingest.publishCounted(value as PublishBody, 'http', { scope });
      if (counted !== undefined) {
        const l = limited;
        counted.then(
          (r) => send(res, 200, resultJson(r), l, deps.rateLimit?.max),
          (err: unknown) => fail(res, err, l, deps),
        );
        return;
      }
    }
    void finish(route, scope, value, limited, res, deps);
  } catch (err) {
    fail(res, err, limited, deps);
  }
}

async function finish(
  route: 'publish' | 'batch',
  scope: string,
  value: unknown,
  taken: Limited | Promise<Limited> | undefined,
  res: ServerResponse,
  deps: FastPathDeps,
): Promise<void> {
  let limited: Limited | undefined;
  try {
    if (taken instanceof Promise) {
      limited = await taken;
      checkLimit(deps.rateLimit!, limited);
    } else limited = taken;
    const text =
      route === 'publish'
        ? resultJson(await deps.ingest.publish(value as PublishBody, 'http', { scope }))
        : `{"results":[${(await batchAnswer(deps.ingest, (value as BatchBody).messages, scope)).map((r) => resultJson(r, '"ok":true,')).join(',')}]}`;
    send(res, 200, text, limited, deps.rateLimit?.max);
  } catch (err) {
    fail(res, err, limited, deps);
  }
}

/** Throws rate_limited once the key is over its limit. */
function checkLimit(limit: NonNullable<FastPathDeps['rateLimit']>, limited: Limited): void {
  if (limited.remaining < 0) {
    limit.onExceeded();
    const retry = Math.max(1, limited.reset);
    throw new RelayError(
      'rate_limited',
      `more than ${limit.max} requests per minute with this key; retry in ${format(limited.reset)}`,
      retry,
    );
  }
}

function fail(res: ServerResponse, err: unknown, limited: Limited | undefined, deps: FastPathDeps): void {
  const error = toRelayError(err, deps.maxPayloadBytes);
  if (error.code === 'internal') deps.log.error({ err }, 'request failed');
  deps.metrics.httpErrors.inc({ code: error.code });
  send(res, error.status, JSON.stringify({ error: error.body() }), limited, deps.rateLimit?.max, error);
}

interface Limited {
  remaining: number;
  reset: number;
}

/** The limiter's answer: at once when its store answers synchronously, else once it has. */
function take(
  limit: NonNullable<FastPathDeps['rateLimit']>,
  route: 'publish' | 'batch',
  key: string,
): Limited | Promise<Limited> {
  const now = limit[route].incrNow?.(key, limit.max);
  if (now !== undefined) return limitedOf(limit.max, now);
  let answer: Limited | undefined;
  let settle: ((l: Limited) => void) | undefined;
  limit[route].incr(
    key,
    (err, r) => {
      // As with the plugin's skipOnError: a limiter that cannot reach Redis lets the request through.
      const l = err || !r ? { remaining: limit.max, reset: 0 } : limitedOf(limit.max, r);
      if (settle) settle(l);
      else answer = l;
    },
    limit.windowMs,
    limit.max,
  );
  if (answer !== undefined) return answer;
  return new Promise((resolve) => {
    settle = resolve;
  });
}

function limitedOf(max: number, r: { current: number; ttl: number }): Limited {
  return { remaining: r.current > max ? -1 : max - r.current, reset: Math.ceil(r.ttl / 1000) };
}

function send(
  res: ServerResponse,
  status: number,
  text: string,
  limited: Limited | undefined,
  max: number | undefined,
  error?: RelayError,
): void {
  if (res.writableEnded || res.destroyed) return;
  const headers: Record<string, string | number> = {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
  };
  if (limited && max !== undefined) {
    headers['x-ratelimit-limit'] = max;
    headers['x-ratelimit-remaining'] = Math.max(0, limited.remaining);
    headers['x-ratelimit-reset'] = limited.reset;
  }
  if (error?.retryAfter !== undefined) headers['retry-after'] = String(error.retryAfter);
  res.writeHead(status, headers);
  res.end(text);
}

/** The answer in the route's schema order (what Fastify's serializer writes). */
function resultJson(r: PublishResult, head = ''): string {
  let channels = '';
  for (const [name, p] of Object.entries(r.channels)) {
    channels += `${channels ? ',' : ''}${JSON.stringify(name)}:{"offset":${p.offset},"epoch":${JSON.stringify(p.epoch)}}`;
  }
  return `{${head}"id":${JSON.stringify(r.id)},"online":{"users":${r.online.users},"sockets":${r.online.sockets}},"offline":${JSON.stringify(r.offline)},"channels":{${channels}}}`;
}

/** `@fastify/rate-limit`'s "after" wording (@lukeed/ms, long form). */
function format(seconds: number): string {
  if (seconds === 0) return '0 ms';
  if (seconds >= 60) {
    const m = Math.round(seconds / 60);
    return `${m} minute${m === 1 ? '' : 's'}`;
  }
  return `${seconds} second${seconds === 1 ? '' : 's'}`;
}
