import { type Server, STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import { ERRORS, type ErrorCode } from '../errors.js';
import type { Metrics } from '../metrics/index.js';

export interface ServerTimeouts {
  /** The whole request, headers and body, must arrive within this (ms). */
  readonly requestTimeoutMs: number;
  /** The request line and headers must arrive within this (ms); at most requestTimeoutMs. */
  readonly headersTimeoutMs: number;
  /** An idle keep-alive connection is closed after this (ms). */
  readonly keepAliveTimeoutMs: number;
}

/**
 * Deadlines on the node:http server itself, so they hold for every route and
 * for whatever answers requests on it (Fastify, Socket.IO's polling, a fast
 * path): a client trickling headers or a body (slowloris) is answered 408 and
 * its socket closed instead of being held open for good. Fastify turns
 * Node's request timeout off by default. Upgraded WebSockets are out of the
 * HTTP parser, so these do not touch them; a long-poll GET is complete once
 * its headers are in. Must run before listen.
 */
export function applyServerTimeouts(server: Server, t: ServerTimeouts): void {
  server.requestTimeout = t.requestTimeoutMs;
  server.headersTimeout = t.headersTimeoutMs;
  server.keepAliveTimeout = t.keepAliveTimeoutMs;
  // Node checks the deadlines every connectionsCheckingInterval (30 s by default),
  // read when the server starts listening: check often enough that a deadline
  // means what it says (the check walks only connections with a request in flight).
  // (A property of every http.Server since Node 18.7, read by its 'listening' handler; not in @types/node's Server.)
  (server as Server & { connectionsCheckingInterval: number }).connectionsCheckingInterval = Math.max(
    50,
    Math.min(1000, Math.floor(t.headersTimeoutMs / 4)),
  );
}

/**
 * Node's client errors (a timed-out, malformed or oversized request line or
 * headers) answered in the relay's error format and counted, as Fastify's
 * default handler does otherwise in its own format.
 */
export function clientErrorHandler(metrics: Metrics) {
  return (err: NodeJS.ErrnoException, socket: Socket): void => {
    if (err.code === 'ECONNRESET' || socket.destroyed) return;
    let code: ErrorCode = 'bad_request';
    let message: string = ERRORS.bad_request.message;
    if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') code = 'request_timeout';
    else if (err.code === 'HPE_HEADER_OVERFLOW') code = 'headers_too_large';
    if (code !== 'bad_request') message = ERRORS[code].message;
    metrics.httpErrors.inc({ code });
    const response = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
    if (socket.writable && !response?.headersSent) {
      const { status } = ERRORS[code];
      const body = JSON.stringify({ error: { code, message } });
      socket.write(
        `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
    }
    socket.destroy();
  };
}
