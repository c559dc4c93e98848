import type { Logger } from 'pino';
import type { Config } from '../../../config/index.js';
import { ECHO_ROOM, isChannelName, isUserId, NATIVE_ROOM, USER_NAMESPACE } from '../../../ingest/message.js';
import { ThrottledLog } from '../../../ingest/sources/throttled-log.js';
import type { Metrics } from '../../../metrics/index.js';
import {
  ECHO_PRESENCE_PREFIX,
  infoValue,
  infoWithin,
  type Member,
  type Presence,
  type PresenceEvent,
} from '../../../presence/index.js';
import type { RelayServer, RelaySocket } from '../../events.js';
import type { Hub } from '../../hub.js';
import { NO_PATTERNS } from '../../tokens.js';
import { authorize, memberFrom, userIdOut } from './auth.js';

// Laravel Echo's Socket.IO protocol (the `laravel-echo` npm package, its
// socket.io connector; laravel-echo-server is the reference server):
//   client -> server  subscribe {channel, auth: {headers}}   (no ack)
//                     unsubscribe {channel, auth}
//                     client event {channel, event: 'client-*', data}
//   server -> client  <event>(channel, data)                  every message
//                     subscription_error(channel, status)
//                     presence:subscribed(channel, [{user_id, user_info}])
//                     presence:joining(channel, {user_id, user_info})
//                     presence:leaving(channel, {user_id, user_info})
// It shares the hub's channels, presence and history with pushrelay's own
// protocol; only the shapes differ.

export const PRIVATE_PREFIX = 'private-';

/** Whether a channel needs the app's consent; anchored (laravel-echo-server's unanchored match is a bug). */
export function isGuarded(channel: string): boolean {
  return channel.startsWith(PRIVATE_PREFIX) || channel.startsWith(ECHO_PRESENCE_PREFIX);
}

/** Status sent with `subscription_error` when the relay itself refused (no call made). */
export const REFUSAL_STATUS = {
  invalid_channel: 400,
  no_auth_url: 403,
  not_public: 403,
  too_many_channels: 413,
  auth_overloaded: 429,
  unavailable: 503,
} as const;

type Kind = 'public' | 'private' | 'presence';
const kindOf = (channel: string): Kind =>
  channel.startsWith(ECHO_PRESENCE_PREFIX)
    ? 'presence'
    : channel.startsWith(PRIVATE_PREFIX)
      ? 'private'
      : 'public';

export interface EchoDeps {
  readonly io: RelayServer;
  readonly config: Config;
  readonly hub: Hub;
  readonly presence: Presence;
  readonly metrics: Metrics;
  readonly log: Logger;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A member as Echo's callbacks get it. */
function memberOut(user: string, info: string | undefined): { user_id: string | number; user_info: unknown } {
  return { user_id: userIdOut(user), user_info: infoValue(info) ?? null };
}

export class EchoFrontEnd {
  /** Auth calls this node is waiting for. */
  private inflight = 0;
  private readonly refusals: ThrottledLog;
  // Shared by every Echo socket (each gets its socket as `this`): no closures per connection.
  private readonly listeners: [string, (this: RelaySocket, ...args: unknown[]) => void][];

  constructor(private readonly deps: EchoDeps) {
    this.refusals = new ThrottledLog(deps.log);
    deps.presence.onEvent((event) => this.notify(event));
    const self = this;
    this.listeners = [
      [
        'subscribe',
        function (this: RelaySocket, request: unknown) {
          void self.subscribe(this, request);
        },
      ],
      [
        'unsubscribe',
        function (this: RelaySocket, request: unknown) {
          self.unsubscribe(this, request);
        },
      ],
      [
        'client event',
        function (this: RelaySocket, request: unknown) {
          self.whisper(this, request);
        },
      ],
    ];
  }

  /**
   * Connect middleware: a socket without a token speaks Echo. Echo hands all
   * its options to io(), so the handshake's `auth` is Echo's `{headers}`.
   */
  admit(socket: RelaySocket): boolean {
    const auth = socket.handshake.auth as Record<string, unknown> | undefined;
    if (isObject(auth) && auth.token !== undefined) return false;
    socket.handshake.auth = {};
    socket.data.echo = true;
    // Echo sockets have no user of their own: each is its own member of public channels.
    socket.data.user = `echo:${socket.id}`;
    socket.data.exp = Number.POSITIVE_INFINITY;
    socket.data.patterns = NO_PATTERNS;
    return true;
  }

  /** A new Echo socket: listeners, and its protocol room. */
  attach(socket: RelaySocket): void {
    const emitter = socket as unknown as { on(e: string, l: (...args: unknown[]) => void): unknown };
    for (const [event, listener] of this.listeners) emitter.on(event, listener);
    socket.join(ECHO_ROOM);
  }

  private refuse(
    socket: RelaySocket,
    channel: string,
    kind: Kind,
    status: number,
    reason: string,
    detail: string,
  ) {
    this.deps.metrics.echoSubscriptions.inc({ kind, outcome: reason });
    this.refusals.warn(
      'echo',
      reason,
      { channel: channel.slice(0, 200), status, detail },
      'refused an Echo subscription',
    );
    if (socket.connected) socket.emit('subscription_error', channel.slice(0, 200), status);
  }

  private async subscribe(socket: RelaySocket, request: unknown): Promise<void> {
    const { config, hub, metrics } = this.deps;
    const channel = isObject(request) ? request.channel : undefined;
    if (typeof channel !== 'string') {
      metrics.echoSubscriptions.inc({ kind: 'public', outcome: 'invalid_channel' });
      this.refusals.warn('echo', 'invalid_channel', {}, 'an Echo subscribe without a channel name');
      return;
    }
    const kind = kindOf(channel);
    if (!isChannelName(channel) || channel.startsWith(`${USER_NAMESPACE}:`)) {
      const detail = `use 1-200 characters of A-Z a-z 0-9 _ . @ = + | ! ~ , ; - (${channel.length} given)`;
      this.refuse(socket, channel, kind, REFUSAL_STATUS.invalid_channel, 'invalid_channel', detail);
      return;
    }
    // Laravel's channel names have no ':'; pushrelay's namespaced channels stay
    // behind their tokens unless their namespace is public.
    if (kind === 'public' && channel.includes(':') && !config.namespace(channel).public) {
      const detail = 'a pushrelay namespace that is not public: its clients need a token';
      this.refuse(socket, channel, kind, REFUSAL_STATUS.not_public, 'not_public', detail);
      return;
    }
    socket.data.echoPending ??= new Set();
    const pending = socket.data.echoPending;
    if (pending.has(channel)) return;
    if (socket.rooms.has(channel)) {
      if (kind === 'presence') await this.sendMembers(socket, channel);
      return;
    }
    // The socket's id room and ECHO_ROOM are not channels.
    if (socket.rooms.size - 2 + pending.size >= config.maxChannels) {
      this.refuse(
        socket,
        channel,
        kind,
        REFUSAL_STATUS.too_many_channels,
        'too_many_channels',
        `at most ${config.maxChannels} channels per socket (PUSHRELAY_MAX_CHANNELS)`,
      );
      return;
    }
    let member: Member | undefined;
    if (kind !== 'public') {
      const url = config.echoAuthUrl;
      if (url === undefined) {
        this.refuse(
          socket,
          channel,
          kind,
          REFUSAL_STATUS.no_auth_url,
          'no_auth_url',
          'PUSHRELAY_ECHO_AUTH_URL is not set',
        );
        return;
      }
      if (pending.size >= config.echoAuthMaxPerSocket || this.inflight >= config.echoAuthMaxInflight) {
        const mine = pending.size >= config.echoAuthMaxPerSocket;
        this.refuse(
          socket,
          channel,
          kind,
          REFUSAL_STATUS.auth_overloaded,
          'auth_overloaded',
          mine
            ? `the socket has ${pending.size} auth calls in flight (PUSHRELAY_ECHO_AUTH_MAX_PER_SOCKET)`
            : `the node has ${this.inflight} auth calls in flight (PUSHRELAY_ECHO_AUTH_MAX_INFLIGHT)`,
        );
        return;
      }
      pending.add(channel);
      this.inflight++;
      metrics.echoAuthInflight.set(this.inflight);
      const started = performance.now();
      const outcome = await authorize({
        url,
        channel,
        socketId: socket.id,
        // The handshake's headers are the request's (a native connection's request is let go of).
        cookie: socket.handshake.headers.cookie,
        auth: isObject(request) ? request.auth : undefined,
        timeoutMs: config.echoAuthTimeout * 1000,
      });
      this.inflight--;
      metrics.echoAuthInflight.set(this.inflight);
      metrics.echoAuthDuration.observe((performance.now() - started) / 1000);
      // Unsubscribed (or gone) while the app was asked: nothing to join.
      if (!pending.delete(channel) || socket.disconnected) return;
      if (!outcome.ok) {
        this.refuse(socket, channel, kind, outcome.status, outcome.reason, outcome.detail);
        return;
      }
      if (kind === 'presence') {
        const m = memberFrom(outcome.answer);
        if (m === undefined || !isUserId(m.user)) {
          this.refuse(
            socket,
            channel,
            kind,
            0,
            'auth_garbage',
            'a presence channel needs channel_data {user_id, user_info} in the answer',
          );
          return;
        }
        let info = m.info;
        if (!infoWithin(info, config.maxUserInfoBytes)) {
          metrics.presenceInfoDropped.inc();
          info = undefined;
        }
        member = { user: m.user, info };
      }
    }
    try {
      await hub.attach(socket, channel, undefined, member);
    } catch (err) {
      this.refuse(socket, channel, kind, REFUSAL_STATUS.unavailable, 'unavailable', (err as Error).message);
      return;
    }
    metrics.echoSubscriptions.inc({ kind, outcome: 'ok' });
    if (kind === 'presence') await this.sendMembers(socket, channel);
  }

  /** `presence:subscribed` with the channel's members cluster-wide, one per user, this socket's included. */
  private async sendMembers(socket: RelaySocket, channel: string): Promise<void> {
    try {
      const members = await this.deps.presence.members(channel);
      if (socket.connected && socket.rooms.has(channel)) {
        socket.emit(
          'presence:subscribed',
          channel,
          members.map((m) => memberOut(m.user, m.info)),
        );
      }
    } catch (err) {
      this.deps.log.warn({ channel, err: (err as Error).message }, 'could not list presence members');
    }
  }

  private unsubscribe(socket: RelaySocket, request: unknown): void {
    const channel = isObject(request) ? request.channel : undefined;
    if (typeof channel !== 'string' || !isChannelName(channel)) return;
    socket.data.echoPending?.delete(channel);
    if (channel !== socket.id && socket.rooms.has(channel)) this.deps.hub.detach(socket, channel);
  }

  /** Whispers reach the channel's other Echo sockets on every node, as laravel-echo-server sends them. */
  private whisper(socket: RelaySocket, request: unknown): void {
    const { metrics } = this.deps;
    let r = request;
    if (typeof r === 'string') {
      try {
        r = JSON.parse(r);
      } catch {
        r = undefined;
      }
    }
    if (!isObject(r) || typeof r.channel !== 'string' || typeof r.event !== 'string') {
      metrics.echoWhispers.inc({ outcome: 'invalid' });
      return;
    }
    const { channel, event } = r;
    if (!event.startsWith('client-') || event.length > 100 || /[\u0000-\u001f\u007f]/.test(event)) {
      metrics.echoWhispers.inc({ outcome: 'invalid' });
      return;
    }
    if (!isGuarded(channel)) {
      metrics.echoWhispers.inc({ outcome: 'not_private' });
      return;
    }
    if (!socket.rooms.has(channel)) {
      metrics.echoWhispers.inc({ outcome: 'not_subscribed' });
      return;
    }
    socket.to(channel).except(NATIVE_ROOM).emit(event, channel, r.data);
    metrics.echoWhispers.inc({ outcome: 'ok' });
  }

  /**
   * A user's first socket in a presence channel anywhere, or their last one
   * gone (a dead node's too): produced once for the cluster, told to the
   * channel's Echo sockets on every node through the adapter.
   */
  private notify(event: PresenceEvent): void {
    if (event.type !== 'member.added' && event.type !== 'member.removed') return;
    if (!event.channel.startsWith(ECHO_PRESENCE_PREFIX)) return;
    let target = this.deps.io.to(event.channel).except(NATIVE_ROOM);
    if (event.socket !== undefined) target = target.except(event.socket);
    target.emit(
      event.type === 'member.added' ? 'presence:joining' : 'presence:leaving',
      event.channel,
      memberOut(event.user, event.info),
    );
  }
}
