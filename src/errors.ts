// Every error the relay answers with, in one registry. HTTP answers, socket
// acknowledgements and connect errors all take their code and default message
// from here; test/unit/errors.test.ts keeps this table, the README's error
// table and the HTTP answers in step.

export interface ErrorDefinition {
  /** HTTP status when the error answers an HTTP request. */
  readonly status: number;
  readonly message: string;
}

export const ERRORS = {
  bad_request: { status: 400, message: 'the request is malformed' },
  request_timeout: {
    status: 408,
    message: 'the request did not arrive in time (PUSHRELAY_REQUEST_TIMEOUT_MS); the connection is closed',
  },
  headers_too_large: { status: 431, message: 'the request headers are too large' },
  invalid_json: { status: 400, message: 'the body is not valid JSON' },
  invalid_encoding: { status: 400, message: 'the body is not valid UTF-8' },
  invalid_body: { status: 400, message: 'the body does not match the schema' },
  forbidden_key: {
    status: 400,
    message: 'the body uses a forbidden property name (__proto__, constructor, prototype)',
  },
  too_deep: { status: 400, message: 'the body is nested too deeply' },
  no_target: {
    status: 400,
    message: 'a publish needs at least one target: users, channels or broadcast: true',
  },
  invalid_target: { status: 400, message: 'broadcast cannot be combined with users or channels' },
  reserved_event: { status: 400, message: 'this event name is reserved' },
  invalid_event: { status: 400, message: 'event names are 1-100 printable characters' },
  invalid_channel: { status: 400, message: 'invalid channel name' },
  invalid_user: { status: 400, message: 'invalid user id' },
  unauthorized: {
    status: 401,
    message:
      'missing credentials: send Authorization: Bearer <secret> (or Basic <name>:<secret>) or sign the request',
  },
  invalid_key: { status: 401, message: 'unknown or wrong publisher key' },
  invalid_signature: { status: 401, message: 'the request signature does not match' },
  stale_signature: { status: 401, message: 'the signed request is outside the five-minute window' },
  replayed_request: { status: 401, message: 'this signed request was already used' },
  token_missing: { status: 401, message: 'no token: connect with io(url, { auth: { token } })' },
  token_invalid: { status: 401, message: 'the token is not valid' },
  token_expired: { status: 401, message: 'the token has expired' },
  forbidden: { status: 403, message: 'this key does not have the scope this route needs' },
  channel_not_allowed: { status: 403, message: 'the token does not allow this channel' },
  publish_not_allowed: { status: 403, message: 'clients may not publish to this channel' },
  origin_not_allowed: { status: 403, message: 'this Origin is not on the allow-list' },
  not_found: { status: 404, message: 'no such route' },
  user_offline: { status: 404, message: 'the user has no socket connected anywhere in the cluster' },
  dead_letter_not_found: { status: 404, message: 'no webhook dead letter with this id' },
  idempotency_conflict: {
    status: 409,
    message: 'this idempotency id was already used with a different body; use a new id for a new message',
  },
  payload_too_large: { status: 413, message: 'the body or message is larger than the limit' },
  too_many_channels: { status: 413, message: 'the socket would exceed its channel limit' },
  unsupported_media_type: {
    status: 415,
    message: 'send Content-Type: application/json or application/x-www-form-urlencoded',
  },
  rate_limited: { status: 429, message: 'rate limit exceeded' },
  unavailable: { status: 503, message: 'Redis is unavailable; retry shortly' },
  over_capacity: {
    status: 503,
    message: 'this node is at its connection limit; retry (another node may take you)',
  },
  not_ready: { status: 503, message: 'this node is not ready' },
  draining: { status: 503, message: 'this node is shutting down' },
  internal: { status: 500, message: 'internal error' },
} as const satisfies Record<string, ErrorDefinition>;

export type ErrorCode = keyof typeof ERRORS;

export interface ErrorBody {
  code: ErrorCode;
  message: string;
}

export class RelayError extends Error {
  readonly status: number;
  constructor(
    readonly code: ErrorCode,
    message?: string,
    /** Seconds, sent as Retry-After on 429 and 503. */
    readonly retryAfter?: number,
  ) {
    super(message ?? ERRORS[code].message);
    this.name = 'RelayError';
    this.status = ERRORS[code].status;
  }

  body(): ErrorBody {
    return { code: this.code, message: this.message };
  }
}

export function isRelayError(err: unknown): err is RelayError {
  return err instanceof RelayError;
}

// ---------------------------------------------------------------------------
// Disconnects. Before the relay ends a socket it emits `pushrelay:disconnect`
// with one of these; `reconnect` tells the client whether to come back at once
// (4100-4199: the relay closes the transport so socket.io-client reconnects
// by itself) or not (4000-4099: the relay ends the Socket.IO session, which
// socket.io-client does not retry).

export interface DisconnectDefinition {
  readonly code: number;
  readonly reconnect: boolean;
  readonly message: string;
}

export const DISCONNECTS = {
  token_expired: { code: 4001, reconnect: false, message: 'the token expired and was not refreshed' },
  kicked: { code: 4002, reconnect: false, message: 'disconnected by the application' },
  draining: { code: 4100, reconnect: true, message: 'this node is shutting down; reconnect now' },
  slow_consumer: {
    code: 4101,
    reconnect: true,
    message: 'the socket fell too far behind; reconnect and recover',
  },
  resync: {
    code: 4102,
    reconnect: true,
    message: 'this node lost messages it cannot recover; reconnect and recover',
  },
  unavailable: { code: 4103, reconnect: true, message: 'Redis is unavailable; reconnect shortly' },
} as const satisfies Record<string, DisconnectDefinition>;

export type DisconnectReason = keyof typeof DISCONNECTS;
