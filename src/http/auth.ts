import { createHmac, hash, timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import type { PublisherKey } from '../config/index.js';
import { RelayError } from '../errors.js';
import type { NonceStore } from './nonces.js';
import type { HttpApp } from './types.js';

/** A signed request is accepted this many seconds either side of the node's clock. */
export const SIGNATURE_WINDOW_S = 300;

export const SIGNATURE_HEADERS = {
  key: 'x-pushrelay-key',
  timestamp: 'x-pushrelay-timestamp',
  signature: 'x-pushrelay-signature',
  nonce: 'x-pushrelay-nonce',
} as const;

/** What a nonce may be: random enough to be unique, and never mistaken for an HTTP method in the signed string. */
export const NONCE_PATTERN = /^[A-Za-z0-9_-]{16,128}$/;

/**
 * The string a publisher signs: "<timestamp>.<METHOD>.<path and query>.<raw body>",
 * or with a nonce "<timestamp>.<nonce>.<METHOD>.<path and query>.<raw body>"
 * (signed, so a captured request cannot be replayed under a new nonce).
 */
export function signingInput(
  timestamp: string,
  method: string,
  url: string,
  body: Buffer | string,
  nonce?: string,
): Buffer {
  const head = nonce === undefined ? timestamp : `${timestamp}.${nonce}`;
  return Buffer.concat([Buffer.from(`${head}.${method.toUpperCase()}.${url}.`), Buffer.from(body)]);
}

export function sign(
  secret: string,
  timestamp: string,
  method: string,
  url: string,
  body: Buffer | string,
  nonce?: string,
): string {
  return createHmac('sha256', secret)
    .update(signingInput(timestamp, method, url, body, nonce))
    .digest('hex');
}

/**
 * SHA-256 of a secret as text (hex), and as bytes for timingSafeEqual. The
 * one-shot hash to a string, then a Buffer from the pool, costs a fraction of
 * a digest() Buffer, which allocates a backing store of its own (~1 against
 * ~4 µs, once per Bearer request).
 */
const hexDigest = (s: string) => hash('sha256', s, 'hex');
const digest = (s: string) => Buffer.from(hexDigest(s), 'hex');
const BEARER = /^Bearer[ \t]+(\S+)[ \t]*$/i;

/**
 * The key an `Authorization: Bearer <secret>` header presents, for the
 * Fastify routes and the fast path alike: one SHA-256 of the secret, one map
 * lookup. Undefined for a header that is not Bearer, null for a wrong secret.
 */
export function bearerKeys(
  keys: readonly PublisherKey[],
): (header: string) => PublisherKey | null | undefined {
  const digests = new Map(
    keys.map((k) => {
      const d = digest(k.secret);
      return [d.toString('hex'), { key: k, digest: d }] as const;
    }),
  );
  return (header) => {
    const bearer = BEARER.exec(header);
    if (!bearer) return undefined;
    const hex = hexDigest(bearer[1]!);
    const found = digests.get(hex);
    // The lookup matched the digest already; the constant-time compare keeps the check honest if the map changes.
    return found && timingSafeEqual(Buffer.from(hex, 'hex'), found.digest) ? found.key : null;
  };
}

/**
 * Publisher authentication for every route that declares a scope:
 * `Authorization: Bearer <secret>` is checked before the body is read;
 * HMAC-signed requests are checked once the raw body is in, and each
 * nonce (or, for a request without one, each signature) is accepted once.
 */
export function registerPublisherAuth(app: HttpApp, keys: readonly PublisherKey[], nonces: NonceStore): void {
  // Each key's digest is computed once: a request costs one SHA-256, of what it presents.
  const digests = new Map(keys.map((k) => [k, digest(k.secret)]));
  const bearerKey = bearerKeys(keys);
  const byName = new Map(keys.map((k) => [k.name, k]));

  const authorize = (request: FastifyRequest, key: PublisherKey) => {
    const scope = request.routeOptions.config.scope!;
    if (!key.scopes.has(scope)) {
      throw new RelayError(
        'forbidden',
        `key "${key.name}" does not have the "${scope}" scope this route needs`,
      );
    }
    request.publisher = key;
  };

  /**
   * `Bearer <secret>`, or `Basic base64(<name>:<secret>)`: Ruby's
   * Net::HTTP.post_form cannot set headers but sends the user and password of
   * the URL (https://app:SECRET@relay/v1/publish) as Basic credentials.
   */
  const fromAuthorization = (header: string): PublisherKey => {
    const bearer = bearerKey(header);
    if (bearer === null) throw new RelayError('invalid_key');
    if (bearer !== undefined) return bearer;
    const basic = /^Basic[ \t]+([A-Za-z0-9+/=]+)[ \t]*$/i.exec(header);
    if (basic) {
      const decoded = Buffer.from(basic[1]!, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon <= 0) throw new RelayError('unauthorized', 'Basic credentials must be <key name>:<secret>');
      const key = byName.get(decodeURIComponentSafe(decoded.slice(0, colon)));
      const secret = decodeURIComponentSafe(decoded.slice(colon + 1));
      if (!key || !timingSafeEqual(digest(secret), digests.get(key)!)) throw new RelayError('invalid_key');
      return key;
    }
    throw new RelayError(
      'unauthorized',
      'the Authorization header must be "Bearer <secret>" or Basic <name>:<secret>',
    );
  };

  app.addHook('onRequest', async (request) => {
    if (request.routeOptions.config.scope === undefined) return;
    const header = request.headers.authorization;
    if (header !== undefined) {
      authorize(request, fromAuthorization(header));
      return;
    }
    if (request.headers[SIGNATURE_HEADERS.key] === undefined) throw new RelayError('unauthorized');
  });

  app.addHook('preValidation', async (request) => {
    if (request.routeOptions.config.scope === undefined || request.publisher !== undefined) return;
    const name = header(request, SIGNATURE_HEADERS.key);
    const timestamp = header(request, SIGNATURE_HEADERS.timestamp);
    const signature = header(request, SIGNATURE_HEADERS.signature);
    if (timestamp === undefined || signature === undefined || name === undefined) {
      throw new RelayError(
        'unauthorized',
        `a signed request needs ${SIGNATURE_HEADERS.key}, ${SIGNATURE_HEADERS.timestamp} and ${SIGNATURE_HEADERS.signature}`,
      );
    }
    const nonce = header(request, SIGNATURE_HEADERS.nonce);
    if (nonce !== undefined && !NONCE_PATTERN.test(nonce)) {
      throw new RelayError(
        'unauthorized',
        `${SIGNATURE_HEADERS.nonce} must be 16-128 characters of A-Z a-z 0-9 _ - (a random value per request)`,
      );
    }
    const key = byName.get(name);
    if (!key) throw new RelayError('invalid_key');
    if (!/^\d{1,12}$/.test(timestamp))
      throw new RelayError('stale_signature', 'the timestamp must be unix seconds');
    if (Math.abs(Date.now() / 1000 - Number(timestamp)) > SIGNATURE_WINDOW_S)
      throw new RelayError('stale_signature');
    const expected = Buffer.from(
      sign(key.secret, timestamp, request.method, request.url, request.rawBody ?? '', nonce),
      'hex',
    );
    const given = /^[0-9a-fA-F]{64}$/.test(signature) ? Buffer.from(signature, 'hex') : Buffer.alloc(0);
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      throw new RelayError('invalid_signature');
    }
    // Kept past both ends of the window so no accepted timestamp can be reused. With a nonce, two
    // identical requests in one second are two requests; without one, the signature is the nonce.
    const seen = nonce === undefined ? signature.toLowerCase() : `n:${nonce}`;
    if (!(await nonces.claim(`${key.name}:${seen}`, SIGNATURE_WINDOW_S * 2 + 60))) {
      throw new RelayError('replayed_request');
    }
    authorize(request, key);
  });
}

/** Ruby percent-encodes URL userinfo before sending it; undo that, leaving malformed text as it is. */
function decodeURIComponentSafe(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

function header(request: FastifyRequest, name: string): string | undefined {
  const v = request.headers[name];
  return typeof v === 'string' ? v : undefined;
}
