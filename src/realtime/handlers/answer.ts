import type { Logger } from 'pino';
import { isRelayError, RelayError } from '../../errors.js';
import type { Metrics } from '../../metrics/index.js';
import type { Answer, RelaySocket } from '../events.js';

export type Handler = (socket: RelaySocket, request: unknown) => Promise<object>;

/** One shared default, not a new closure per socket and event. */
const admitAll = (): RelayError | undefined => undefined;

/**
 * A listener for one client request event: every request gets exactly one
 * answer, `{ ok: true, ... }` or `{ ok: false, error: { code, message } }`,
 * and no request can throw out of the handler. The socket is `this` (as
 * EventEmitter calls listeners), so one listener serves every socket and a
 * connection costs no closure per event.
 */
export function answerer(
  event: string,
  handler: Handler,
  metrics: Metrics,
  log: Logger,
  admit: (socket: RelaySocket) => RelayError | undefined = admitAll,
): (this: RelaySocket, ...args: unknown[]) => void {
  return function (this: RelaySocket, ...args: unknown[]) {
    const last = args[args.length - 1];
    const ack = typeof last === 'function' ? (last as (a: Answer) => void) : undefined;
    const request = args.length > (ack ? 1 : 0) ? args[0] : undefined;
    const refused = admit(this);
    const work = refused ? Promise.reject(refused) : handler(this, request);
    work.then(
      (result) => {
        metrics.socketEvents.inc({ event, outcome: 'ok' });
        ack?.({ ok: true, ...result });
      },
      (err: unknown) => {
        const error = isRelayError(err) ? err : new RelayError('internal');
        if (!isRelayError(err)) log.error({ err, event }, 'client request failed');
        metrics.socketEvents.inc({ event, outcome: error.code });
        ack?.({ ok: false, error: error.body() });
      },
    );
  };
}

/** Registers `answerer(...)` on one socket. */
export function answer(
  socket: RelaySocket,
  event: string,
  handler: Handler,
  metrics: Metrics,
  log: Logger,
  admit: (socket: RelaySocket) => RelayError | undefined = admitAll,
): void {
  (socket as unknown as { on(e: string, l: (...args: unknown[]) => void): void }).on(
    event,
    answerer(event, handler, metrics, log, admit),
  );
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Validates a list of channel names in a client request. */
export function channelList(request: unknown, event: string, max: number): string[] {
  if (!isObject(request) || !Array.isArray(request.channels) || request.channels.length === 0) {
    throw new RelayError('bad_request', `${event} takes { channels: ["name", ...] }`);
  }
  if (request.channels.length > max) {
    throw new RelayError('too_many_channels', `${event} names more than ${max} channels`);
  }
  return [...new Set(request.channels as unknown[])] as string[];
}
