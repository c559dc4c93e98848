import { createPublicKey, type KeyObject } from 'node:crypto';
import { createRemoteJWKSet, type JWTVerifyGetKey, errors as joseErrors, jwtVerify } from 'jose';
import type { Config } from '../config/index.js';
import { RelayError } from '../errors.js';
import { checkValue } from '../ingest/json.js';
import { isUserId, USER_NAMESPACE } from '../ingest/message.js';

/** What the relay takes from a client token. */
export interface Claims {
  readonly user: string;
  /** Seconds since the epoch. */
  readonly exp: number;
  /** Channel patterns the token allows (`order:42`, `team:7:*`). */
  readonly patterns: readonly string[];
  /** The `user_info` claim as JSON text: what presence shows of the user. */
  readonly userInfo?: string | undefined;
  /**
   * The `watch` claim: a user's own channel this socket receives too (the
   * console's tail). It grants nothing a holder of the signing key could not
   * have by signing a token for that user, and it puts the socket in no
   * presence list.
   */
  readonly watch?: string | undefined;
}

export type TokenVerifier = (token: unknown) => Promise<Claims>;

const USER_PREFIX = `${USER_NAMESPACE}:`;
const PATTERN_RE = /^[A-Za-z0-9_.@=+|!~,;:*-]{1,200}$/;
/** The patterns of a token without `channels`: one list shared by all such sockets, not an empty array each. */
export const NO_PATTERNS: readonly string[] = Object.freeze([]);
/** Tolerated clock difference between the token issuer and this node, in seconds. */
const CLOCK_TOLERANCE_S = 5;

type KeySource = { key: Uint8Array | KeyObject | JWTVerifyGetKey; algorithms: string[] };

function keySource(config: Config): KeySource {
  if (config.jwtSecret !== undefined) {
    return { key: new TextEncoder().encode(config.jwtSecret), algorithms: ['HS256'] };
  }
  if (config.jwtPublicKey !== undefined) {
    const key = createPublicKey(config.jwtPublicKey.replace(/\\n/g, '\n'));
    if (key.asymmetricKeyType === 'rsa') return { key, algorithms: ['RS256'] };
    if (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1') {
      return { key, algorithms: ['ES256'] };
    }
    throw new Error('PUSHRELAY_JWT_PUBLIC_KEY: must be an RSA or P-256 EC public key');
  }
  if (config.jwksUrl !== undefined) {
    return {
      // Keys are cached for ten minutes; a token naming an unknown kid refetches
      // (a rotated key works at once), at most every five seconds so forged
      // kids cannot turn clients into a flood on the identity provider.
      key: createRemoteJWKSet(config.jwksUrl, {
        cacheMaxAge: 10 * 60_000,
        cooldownDuration: 5_000,
        timeoutDuration: 5_000,
      }),
      algorithms: ['RS256', 'ES256'],
    };
  }
  throw new Error('no way to verify client tokens is configured');
}

/**
 * Verifies client tokens with the algorithms pinned to the configured key
 * (an `alg: none` token, or an HS256 token signed with an RSA public key,
 * never verifies). `sub` and `exp` are required.
 */
export function createTokenVerifier(config: Config): TokenVerifier {
  const { key, algorithms } = keySource(config);
  return async (token) => {
    if (typeof token !== 'string' || token === '') throw new RelayError('token_missing');
    let payload: Record<string, unknown>;
    try {
      const options = {
        algorithms,
        audience: config.jwtAudience,
        issuer: config.jwtIssuer,
        requiredClaims: ['exp', 'sub'],
        clockTolerance: CLOCK_TOLERANCE_S,
      };
      const verified =
        typeof key === 'function'
          ? await jwtVerify(token, key, options)
          : await jwtVerify(token, key as Uint8Array | KeyObject, options);
      payload = verified.payload;
    } catch (err) {
      throw tokenError(err);
    }
    const { sub, exp, channels, user_info, watch } = payload;
    if (!isUserId(sub)) throw new RelayError('token_invalid', 'the token "sub" is not a valid user id');
    if (typeof exp !== 'number') throw new RelayError('token_invalid', 'the token "exp" must be a number');
    let patterns = NO_PATTERNS;
    if (channels !== undefined) {
      if (!Array.isArray(channels) || !channels.every((p) => typeof p === 'string' && PATTERN_RE.test(p))) {
        throw new RelayError(
          'token_invalid',
          'the token "channels" claim must be a list of channel patterns',
        );
      }
      patterns = channels as string[];
    }
    if (
      watch !== undefined &&
      !(
        typeof watch === 'string' &&
        watch.startsWith(USER_PREFIX) &&
        isUserId(watch.slice(USER_PREFIX.length))
      )
    ) {
      throw new RelayError('token_invalid', 'the token "watch" claim must be a user channel, user:<id>');
    }
    return {
      user: sub,
      exp,
      patterns,
      userInfo: userInfoClaim(user_info, config),
      ...(watch !== undefined ? { watch } : {}),
    };
  };
}

/** The `user_info` claim as presence keeps it: a JSON object, within the size and depth limits. */
function userInfoClaim(value: unknown, config: Config): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new RelayError('token_invalid', 'the token "user_info" claim must be a JSON object');
  }
  try {
    checkValue(value, config.maxJsonDepth);
  } catch (err) {
    throw new RelayError(
      'token_invalid',
      `the token "user_info" claim is refused: ${(err as Error).message}`,
    );
  }
  const text = JSON.stringify(value);
  const bytes = Buffer.byteLength(text);
  if (bytes > config.maxUserInfoBytes) {
    throw new RelayError(
      'token_invalid',
      `the token "user_info" claim is ${bytes} bytes of JSON; the limit is ${config.maxUserInfoBytes} (PUSHRELAY_MAX_USER_INFO_BYTES)`,
    );
  }
  return text;
}

function tokenError(err: unknown): RelayError {
  if (err instanceof RelayError) return err;
  if (err instanceof joseErrors.JWTExpired) return new RelayError('token_expired');
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    return new RelayError('token_invalid', `the token is not valid: ${err.message}`);
  }
  if (err instanceof joseErrors.JOSEAlgNotAllowed) {
    return new RelayError('token_invalid', 'the token is not valid: its algorithm is not allowed');
  }
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) {
    return new RelayError('token_invalid', 'the token is not valid: the signature does not verify');
  }
  if (err instanceof joseErrors.JWKSNoMatchingKey) {
    return new RelayError('token_invalid', 'the token is not valid: no key in the JWKS matches it');
  }
  if (
    err instanceof joseErrors.JWKSTimeout ||
    err instanceof joseErrors.JWKSInvalid ||
    err instanceof TypeError ||
    (err instanceof joseErrors.JOSEError && /JSON Web Key Set/.test(err.message))
  ) {
    // The JWKS could not be fetched: not the token's fault, and worth retrying.
    return new RelayError('unavailable', 'the keys verifying tokens could not be fetched; retry shortly', 1);
  }
  if (err instanceof joseErrors.JOSEError) {
    return new RelayError('token_invalid', `the token is not valid: ${err.message}`);
  }
  return new RelayError('token_invalid', 'the token is not valid: it could not be verified');
}

/**
 * `*` matches any run of characters (none included). Matched without
 * backtracking: a token's patterns come from the backend, but a regular
 * expression of several `.*` against a near-miss channel takes time
 * exponential in the wildcards (5 blocked the event loop ~0.9 s per subscribe).
 */
export function channelAllowed(patterns: readonly string[], channel: string): boolean {
  for (const p of patterns) {
    if (p === channel) return true;
    if (p.includes('*') && globMatch(p, channel)) return true;
  }
  return false;
}

/**
 * Greedy wildcard matching with one resume point: on a mismatch only the last
 * `*` seen takes one more character. Earlier stars never need to be revisited
 * (any text a later star could leave to them it can swallow itself), so the
 * cost is at most pattern length × channel length, with no recursion.
 */
export function globMatch(pattern: string, text: string): boolean {
  let p = 0;
  let t = 0;
  let star = -1;
  let resume = 0;
  while (t < text.length) {
    if (p < pattern.length && pattern[p] === '*') {
      star = p++;
      resume = t;
    } else if (p < pattern.length && pattern[p] === text[t]) {
      p++;
      t++;
    } else if (star >= 0) {
      p = star + 1;
      t = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.length && pattern[p] === '*') p++;
  return p === pattern.length;
}
