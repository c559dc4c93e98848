import { io, type Socket } from 'socket.io-client';
import type { ConnectedEvent } from '../../src/realtime/events.js';
import { waitFor } from './wait.js';

export interface Received {
  event: string;
  data: unknown;
  meta: { id: string; channel: string; offset: number; epoch: string; ts: number } | undefined;
}

export interface TestClient {
  readonly socket: Socket;
  /** Every event the client received, in order (pushrelay:* notices included). */
  readonly received: Received[];
  readonly connected: ConnectedEvent;
  /** Events with this name received so far. */
  events(name: string): Received[];
  waitForEvent(name: string, count?: number, timeoutMs?: number): Promise<Received[]>;
  request<T = Record<string, unknown>>(event: string, payload: unknown): Promise<T>;
  close(): void;
}

export interface ClientOptions {
  transports?: ('websocket' | 'polling')[];
  since?: Record<string, { offset: number; epoch: string }>;
  reconnection?: boolean;
  extraHeaders?: Record<string, string>;
  /** Keep cookies (a load balancer's affinity cookie) between requests, as a browser does. */
  withCredentials?: boolean;
}

/** A stock socket.io-client connected with a token; resolves once the relay said pushrelay:connected. */
export async function connectClient(
  url: string,
  token: string,
  opts: ClientOptions = {},
): Promise<TestClient> {
  const socket = io(url, {
    auth: { token, ...(opts.since ? { since: opts.since } : {}) },
    transports: opts.transports ?? ['websocket'],
    reconnection: opts.reconnection ?? false,
    forceNew: true,
    extraHeaders: opts.extraHeaders,
    withCredentials: opts.withCredentials ?? false,
  });
  const received: Received[] = [];
  socket.onAny((event: string, data: unknown, meta: Received['meta']) =>
    received.push({ event, data, meta }),
  );
  const connected = await new Promise<ConnectedEvent>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no pushrelay:connected within 10 s')), 10_000);
    socket.once('pushrelay:connected', (e: ConnectedEvent) => {
      clearTimeout(timer);
      resolve(e);
    });
    socket.once('connect_error', (err) => {
      clearTimeout(timer);
      socket.close();
      reject(err);
    });
  });
  const events = (name: string) => received.filter((r) => r.event === name);
  return {
    socket,
    received,
    connected,
    events,
    waitForEvent: (name, count = 1, timeoutMs = 10_000) =>
      waitFor(() => (events(name).length >= count ? events(name) : undefined), {
        timeoutMs,
        what: `${count} "${name}" event(s)`,
      }),
    request: <T>(event: string, payload: unknown) =>
      socket.timeout(10_000).emitWithAck(event, payload) as Promise<T>,
    close: () => socket.close(),
  };
}

/** The connect_error a refused handshake gives, with the relay's code. */
export function connectError(
  url: string,
  auth: Record<string, unknown>,
  opts: ClientOptions = {},
): Promise<Error & { data?: { code?: string } }> {
  const socket = io(url, {
    auth,
    transports: opts.transports ?? ['websocket'],
    reconnection: false,
    forceNew: true,
    extraHeaders: opts.extraHeaders,
    withCredentials: opts.withCredentials ?? false,
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('neither connect nor connect_error')), 10_000);
    socket.once('connect_error', (err) => {
      clearTimeout(timer);
      socket.close();
      resolve(err as Error & { data?: { code?: string } });
    });
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.close();
      reject(new Error('connected, but a refusal was expected'));
    });
  });
}
