import { io, type ManagerOptions, type Socket, type SocketOptions } from 'socket.io-client';
import type { ErrorCode } from '../errors.js';
import type { ChannelAnswer, ConnectedEvent, DisconnectNotice, PresenceNotice } from '../realtime/events.js';

// pushrelay/client: the browser (and Node) side of the relay, on the stock
// socket.io-client. It keeps the client protocol's promises for the app:
// every reconnect passes back the last position seen per channel, so missed
// messages arrive by themselves, and the app hears (pushrelay:reload) when
// they could not.

export type { ChannelAnswer, ConnectedEvent, DisconnectNotice, PresenceNotice };

/** Where a client is in a channel's history. */
export interface Position {
  offset: number;
  epoch: string;
}

/** The second argument of every message handler: where the message sits, and its event name. */
export interface Meta extends Position {
  id: string;
  channel: string;
  /** Milliseconds since the epoch, when the relay accepted the publish. */
  ts: number;
  event: string;
}

export type MessageHandler<T = unknown> = (data: T, meta: Meta) => void;

/** A client token, or a function that fetches a fresh one from the app's backend. */
export type TokenSource = string | (() => string | Promise<string>);

/** History could not fill a gap in this channel: the app should reload its state for it. */
export interface ReloadNotice {
  channel: string;
  /** `epoch_changed`: the relay lost the channel's history; `not_recovered`: it no longer reaches back far enough. */
  reason: 'epoch_changed' | 'not_recovered';
}

/** Errors the module reports besides the relay's own codes. */
export type ClientErrorCode = ErrorCode | 'token_unavailable' | 'timeout' | 'disconnected' | 'closed';

export class PushRelayError extends Error {
  constructor(
    readonly code: ClientErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'PushRelayError';
  }
}

export interface LifecycleEvents {
  /** The relay set the socket up (after every connect and reconnect). */
  'pushrelay:connected': (event: ConnectedEvent) => void;
  /** The relay is about to end the socket, and why. */
  'pushrelay:disconnect': (notice: DisconnectNotice) => void;
  'pushrelay:join': (notice: PresenceNotice) => void;
  'pushrelay:leave': (notice: PresenceNotice) => void;
  /** Messages were lost for good in a channel: reload the state it feeds. */
  'pushrelay:reload': (notice: ReloadNotice) => void;
  /** Something the app may want to show: a refused token, a failed refresh, a refused subscribe. */
  'pushrelay:error': (error: PushRelayError) => void;
}

export interface PushRelayOptions {
  token: TokenSource;
  /** Default: WebSocket first, long-polling when it is unavailable (socket.io-client's order is polling, then upgrade). */
  transports?: ('websocket' | 'polling' | 'webtransport')[];
  /** Positions saved by an earlier page (see `positions()`), so even a page reload recovers. */
  positions?: Record<string, Position>;
  /** Call `on` handlers once per message id, even when it arrives in several channels (default true). */
  dedupe?: boolean;
  /** Refresh the token this many seconds before it expires, at most a fifth of its remaining life (default 60). */
  refreshMarginSeconds?: number;
  /** How long to wait for the relay to answer a request, in milliseconds (default 10000). */
  timeoutMs?: number;
  /** Anything else socket.io-client takes (path, extraHeaders, reconnectionDelayMax, ...). */
  socket?: Partial<ManagerOptions & SocketOptions>;
}

export interface Subscription {
  readonly channel: string;
  /** Resolves with the channel's position once the relay subscribed the socket; rejects with a PushRelayError. */
  readonly ready: Promise<ChannelAnswer>;
  /** Removes this handler; the socket leaves the channel when no handler is left. */
  unsubscribe(): Promise<void>;
}

type Answer<T> = ({ ok: true } & T) | { ok: false; error: { code: ErrorCode; message: string } };

interface ChannelState {
  handlers: Set<MessageHandler>;
  ready: Promise<ChannelAnswer>;
  settle?: { resolve: (a: ChannelAnswer) => void; reject: (e: PushRelayError) => void };
}

const USER_PREFIX = 'user:';
const BROADCAST = '$broadcast';
/** Message ids remembered for de-duplication. */
const SEEN_IDS = 1000;
const MAX_BACKOFF_MS = 30_000;
const TOKEN_ERRORS: ReadonlySet<string> = new Set(['token_missing', 'token_invalid', 'token_expired']);

/**
 * A connection to the relay. Messages arrive through `subscribe(channel,
 * handler)` (one channel) and `on(event, handler)` (one event name, any
 * channel, including the user's own and broadcasts).
 */
export class PushRelay {
  /** The underlying socket.io-client socket. */
  readonly socket: Socket;
  private readonly options: PushRelayOptions;
  private readonly channels = new Map<string, ChannelState>();
  private readonly handlers = new Map<string, Set<(...args: never[]) => void>>();
  private readonly position = new Map<string, Position>();
  private readonly seen = new Set<string>();
  private token: string | undefined;
  private tokenExpiresAt: number | undefined;
  private mustFetch = false;
  private session: ConnectedEvent | undefined;
  private notice: DisconnectNotice | undefined;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private failures = 0;
  private closed = false;

  constructor(url: string, options: PushRelayOptions) {
    if (typeof url !== 'string' || url === '') throw new TypeError('PushRelay needs the relay URL');
    if (options === null || typeof options !== 'object')
      throw new TypeError('PushRelay needs options with a token');
    if (typeof options.token !== 'function' && (typeof options.token !== 'string' || options.token === '')) {
      throw new TypeError('options.token must be a token string or a function returning one');
    }
    this.options = options;
    for (const [channel, p] of Object.entries(options.positions ?? {})) {
      if (isPosition(p)) this.position.set(channel, { offset: p.offset, epoch: p.epoch });
    }
    this.socket = io(url, {
      ...options.socket,
      ...(options.transports ? { transports: options.transports } : {}),
      auth: (cb) => {
        this.currentToken().then(
          (token) => {
            // Remembered to judge the answer in pushrelay:connected: recovery applies only where a position was sent.
            this.sentOwn = this.ownPositions();
            cb({ token, since: this.sentOwn });
          },
          (err: unknown) => {
            this.fail(new PushRelayError('token_unavailable', `could not get a token: ${errorMessage(err)}`));
            // Connecting without a token makes the relay refuse it (token_missing), which schedules a retry.
            cb({});
          },
        );
      },
    });
    this.socket.onAny((event: string, ...args: unknown[]) => this.dispatch(event, args));
    this.socket.on('connect_error', (err) => this.connectFailed(err));
    this.socket.on('disconnect', (reason) => this.disconnected(reason));
  }

  /** The user the relay authenticated, once connected. */
  get user(): string | undefined {
    return this.session?.user;
  }

  /** The node the socket is on, once connected. */
  get node(): string | undefined {
    return this.session?.node;
  }

  get connected(): boolean {
    return this.socket.connected && this.session !== undefined;
  }

  /**
   * Calls `handler(data, meta)` for every message on `channel`. The first
   * handler of a channel subscribes the socket (again after every reconnect,
   * recovering what was missed).
   */
  subscribe<T = unknown>(channel: string, handler: MessageHandler<T>): Subscription {
    if (typeof channel !== 'string' || channel === '') throw new TypeError('subscribe needs a channel name');
    if (typeof handler !== 'function') throw new TypeError('subscribe needs a handler function');
    if (this.closed) throw new PushRelayError('closed', 'this connection was closed');
    let state = this.channels.get(channel);
    if (state === undefined) {
      const s: ChannelState = { handlers: new Set(), ready: Promise.resolve({} as ChannelAnswer) };
      s.ready = new Promise((resolve, reject) => {
        s.settle = { resolve, reject };
      });
      // The app may never look at `ready`; a refusal still reaches pushrelay:error.
      s.ready.catch(() => {});
      this.channels.set(channel, s);
      state = s;
      if (this.connected) void this.join([channel]);
    }
    const h = handler as MessageHandler;
    state.handlers.add(h);
    const ready = state.ready;
    return {
      channel,
      ready,
      unsubscribe: async () => {
        const current = this.channels.get(channel);
        if (current === undefined || !current.handlers.delete(h) || current.handlers.size > 0) return;
        this.channels.delete(channel);
        if (this.connected && !isOwn(channel)) await this.request('unsubscribe', { channels: [channel] });
      },
    };
  }

  /**
   * `on('bid', (data, meta) => ...)` for an event name in any channel, or
   * `on('pushrelay:reload', ...)` and the other lifecycle events. Returns a
   * function that removes the handler.
   */
  on<E extends keyof LifecycleEvents>(event: E, handler: LifecycleEvents[E]): () => void;
  on<T = unknown>(event: string, handler: MessageHandler<T>): () => void;
  on(event: string, handler: (...args: never[]) => void): () => void {
    if (typeof event !== 'string' || event === '') throw new TypeError('on needs an event name');
    if (typeof handler !== 'function') throw new TypeError('on needs a handler function');
    let set = this.handlers.get(event);
    if (set === undefined) {
      set = new Set();
      this.handlers.set(event, set);
    }
    set.add(handler);
    return () => {
      this.handlers.get(event)?.delete(handler);
    };
  }

  /** Publishes to a channel whose namespace lets clients publish. */
  async publish(channel: string, event: string, data?: unknown): Promise<{ id: string; offset: number }> {
    return this.request<{ id: string; offset: number }>('publish', { channel, event, data });
  }

  /** The last position seen per channel; save it (sessionStorage) and pass it back as `options.positions`. */
  positions(): Record<string, Position> {
    return Object.fromEntries([...this.position].map(([c, p]) => [c, { ...p }]));
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.refreshTimer);
    clearTimeout(this.retryTimer);
    for (const state of this.channels.values()) {
      state.settle?.reject(new PushRelayError('closed', 'this connection was closed'));
    }
    this.socket.disconnect();
  }

  // -------------------------------------------------------------------------

  private dispatch(event: string, args: unknown[]): void {
    if (event.startsWith('pushrelay:')) {
      if (event === 'pushrelay:connected') this.connectedTo(args[0] as ConnectedEvent);
      else if (event === 'pushrelay:disconnect') this.notice = args[0] as DisconnectNotice;
      this.emit(event, args[0]);
      return;
    }
    const [data, wire] = args;
    if (!isWireMeta(wire)) {
      this.emit(event, data, undefined);
      return;
    }
    const meta: Meta = { ...wire, event };
    this.advance(meta.channel, meta);
    const state = this.channels.get(meta.channel);
    if (state) for (const h of state.handlers) this.safely(() => h(data, meta));
    if (this.options.dedupe !== false) {
      if (this.seen.has(meta.id)) return;
      this.seen.add(meta.id);
      if (this.seen.size > SEEN_IDS) this.seen.delete(this.seen.values().next().value as string);
    }
    this.emit(event, data, meta);
  }

  private emit(event: string, ...args: unknown[]): void {
    for (const h of this.handlers.get(event) ?? [])
      this.safely(() => (h as (...a: unknown[]) => void)(...args));
  }

  /** An app handler that throws must not stop the others, nor the module's own bookkeeping. */
  private safely(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      setTimeout(() => {
        throw err;
      });
    }
  }

  private connectedTo(event: ConnectedEvent): void {
    this.session = event;
    this.failures = 0;
    this.notice = undefined;
    this.tokenExpiresAt = event.expiresAt;
    for (const [channel, answer] of Object.entries(event.channels)) {
      this.settled(channel, answer, isOwn(channel) ? this.sentOwn[channel] : undefined);
    }
    this.scheduleRefresh();
    const channels = [...this.channels.keys()].filter((c) => !isOwn(c));
    for (const c of this.channels.keys()) if (isOwn(c)) this.resolveOwn(c);
    if (channels.length > 0) void this.join(channels);
  }

  /** The user's own channel and the broadcast channel need no subscribe: every socket is in them. */
  private resolveOwn(channel: string): void {
    const state = this.channels.get(channel);
    const answer = this.session?.channels[channel];
    if (!state?.settle) return;
    if (answer) state.settle.resolve(answer);
    else if (channel.startsWith(USER_PREFIX)) {
      state.settle.reject(
        new PushRelayError(
          'channel_not_allowed',
          `"${channel}" is another user's channel; this socket is ${this.user}`,
        ),
      );
    }
  }

  /** One request per channel, so one refused channel does not keep the others out. */
  private async join(channels: string[]): Promise<void> {
    await Promise.all(
      channels.map(async (channel) => {
        if (isOwn(channel)) return this.resolveOwn(channel);
        const p = this.position.get(channel);
        try {
          const answer = await this.request<{ channels: Record<string, ChannelAnswer> }>('subscribe', {
            channels: [channel],
            ...(p ? { since: { [channel]: p } } : {}),
          });
          const a = answer.channels[channel];
          if (a && this.channels.has(channel)) this.settled(channel, a, p);
        } catch (err) {
          const error = err as PushRelayError;
          // A lost connection is not an answer: the next connect subscribes again.
          if (error.code === 'disconnected' || error.code === 'closed') return;
          this.channels.get(channel)?.settle?.reject(error);
          if (error.code === 'channel_not_allowed' || error.code === 'invalid_channel') {
            this.channels.delete(channel);
          }
          this.fail(error);
        }
      }),
    );
  }

  /**
   * A channel's position from the relay. `asked` is the position this client
   * sent as `since`: only then does `recovered: false` (or another epoch) mean
   * something was missed. Messages may arrive before the answer, so the
   * position only ever moves forward.
   */
  private settled(channel: string, answer: ChannelAnswer, asked: Position | undefined): void {
    if (asked !== undefined) {
      // Epoch "0" is a channel not yet published to: the relay recovers it from its first message.
      const unborn = asked.epoch === '0' && asked.offset === 0;
      if (asked.epoch !== answer.epoch && !unborn) {
        this.emit('pushrelay:reload', { channel, reason: 'epoch_changed' });
      } else if (!answer.recovered) this.emit('pushrelay:reload', { channel, reason: 'not_recovered' });
    }
    this.advance(channel, answer);
    const state = this.channels.get(channel);
    state?.settle?.resolve(answer);
  }

  private advance(channel: string, p: Position): void {
    const before = this.position.get(channel);
    if (before === undefined || before.epoch !== p.epoch || p.offset > before.offset) {
      this.position.set(channel, { offset: p.offset, epoch: p.epoch });
    }
  }

  /** The `since` sent with the last handshake. */
  private sentOwn: Record<string, Position> = {};

  /** Positions the relay recovers at connect (the user's own channel and broadcasts); others at subscribe. */
  private ownPositions(): Record<string, Position> {
    const out: Record<string, Position> = {};
    for (const [c, p] of this.position) if (isOwn(c)) out[c] = p;
    return out;
  }

  private async currentToken(): Promise<string> {
    const source = this.options.token;
    if (typeof source === 'string') return source;
    const fresh = this.token !== undefined && !this.mustFetch && !expiresWithin(this.token, 5);
    if (fresh) return this.token!;
    const token = await source();
    if (typeof token !== 'string' || token === '') throw new Error('the token function returned no token');
    this.token = token;
    this.mustFetch = false;
    return token;
  }

  private connectFailed(err: Error & { data?: { code?: string } }): void {
    if (this.closed || this.socket.active) return; // socket.io-client retries transport errors itself
    // The relay refused the handshake: only a new token can change its mind.
    const code = (err.data?.code ?? 'token_invalid') as ErrorCode;
    this.fail(new PushRelayError(code, err.message));
    if (TOKEN_ERRORS.has(code) && typeof this.options.token === 'function') {
      this.mustFetch = true;
      this.retry();
    }
  }

  private disconnected(reason: string): void {
    this.session = undefined;
    clearTimeout(this.refreshTimer);
    if (this.closed || reason !== 'io server disconnect') return;
    // The relay ended the session (not just the transport): socket.io-client will not come back by itself.
    if (this.notice?.reason === 'token_expired' && typeof this.options.token === 'function') {
      this.mustFetch = true;
      this.retry();
    }
  }

  private retry(): void {
    const delay = Math.min(MAX_BACKOFF_MS, 500 * 2 ** this.failures++) * (0.5 + Math.random() / 2);
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      if (!this.closed && !this.socket.connected) this.socket.connect();
    }, delay);
  }

  private scheduleRefresh(): void {
    clearTimeout(this.refreshTimer);
    if (typeof this.options.token !== 'function' || this.tokenExpiresAt === undefined) return;
    const left = this.tokenExpiresAt * 1000 - Date.now();
    const margin = Math.min((this.options.refreshMarginSeconds ?? 60) * 1000, left / 5);
    this.refreshTimer = setTimeout(() => void this.refresh(), Math.max(0, left - margin));
  }

  /** Sends a fresh token before the current one expires, so the relay does not end the session. */
  private async refresh(): Promise<void> {
    if (!this.connected) return;
    try {
      this.mustFetch = true;
      const token = await this.currentToken();
      const answer = await this.request<{ expiresAt: number }>('refresh', { token });
      this.tokenExpiresAt = answer.expiresAt;
      this.scheduleRefresh();
    } catch (err) {
      const error =
        err instanceof PushRelayError
          ? err
          : new PushRelayError('token_unavailable', `could not refresh the token: ${errorMessage(err)}`);
      if (error.code === 'disconnected' || error.code === 'closed') return;
      this.fail(error);
      // Try again while there is time; at expiry the relay disconnects and the reconnect fetches a token.
      const left = (this.tokenExpiresAt ?? 0) * 1000 - Date.now();
      if (left > 2000) this.refreshTimer = setTimeout(() => void this.refresh(), Math.min(5000, left / 2));
    }
  }

  private async request<T extends object>(event: string, payload: unknown): Promise<T> {
    if (this.closed) throw new PushRelayError('closed', 'this connection was closed');
    if (!this.socket.connected)
      throw new PushRelayError('disconnected', `not connected: ${event} was not sent`);
    let answer: Answer<T>;
    try {
      answer = (await this.socket
        .timeout(this.options.timeoutMs ?? 10_000)
        .emitWithAck(event, payload)) as Answer<T>;
    } catch {
      if (!this.socket.connected)
        throw new PushRelayError('disconnected', `the connection dropped during ${event}`);
      throw new PushRelayError('timeout', `the relay did not answer ${event} in time`);
    }
    if (!answer.ok) throw new PushRelayError(answer.error.code, answer.error.message);
    return answer;
  }

  private fail(error: PushRelayError): void {
    this.emit('pushrelay:error', error);
  }
}

/** `new PushRelay(url, options)`. */
export function connect(url: string, options: PushRelayOptions): PushRelay {
  return new PushRelay(url, options);
}

function isOwn(channel: string): boolean {
  return channel === BROADCAST || channel.startsWith(USER_PREFIX);
}

function isPosition(p: unknown): p is Position {
  const o = p as Position;
  return (
    typeof o === 'object' &&
    o !== null &&
    Number.isSafeInteger(o.offset) &&
    o.offset >= 0 &&
    typeof o.epoch === 'string'
  );
}

function isWireMeta(m: unknown): m is Omit<Meta, 'event'> {
  const o = m as Meta;
  return (
    isPosition(m) && typeof o.id === 'string' && typeof o.channel === 'string' && typeof o.ts === 'number'
  );
}

/** True when the JWT's `exp` is less than `seconds` away (or unreadable: then the relay decides). */
function expiresWithin(token: string, seconds: number): boolean {
  try {
    const part = token.split('.')[1] ?? '';
    const json = atob(part.replace(/-/g, '+').replace(/_/g, '/'));
    const exp = (JSON.parse(json) as { exp?: unknown }).exp;
    return typeof exp === 'number' && exp * 1000 - Date.now() < seconds * 1000;
  } catch {
    return false;
  }
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
