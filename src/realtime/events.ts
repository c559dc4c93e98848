import type { Server, Socket } from 'socket.io';
import type { DisconnectReason, ErrorBody } from '../errors.js';
import type { Position } from '../ingest/message.js';
import type { Member } from '../presence/index.js';
import type { BucketState } from './limits.js';

// The wire protocol a client sees, as types. Client requests carry an
// acknowledgement; every answer is { ok: true, ... } or { ok: false, error }.

export type Answer<T extends object = object> = ({ ok: true } & T) | { ok: false; error: ErrorBody };
export type Ack<T extends object = object> = (answer: Answer<T>) => void;

/** A client's claim of where it left off in a channel. */
export type Since = Record<string, Position>;

export interface ChannelAnswer extends Position {
  /** True when every message after the client's `since` position was delivered, in order, before this answer. */
  recovered: boolean;
}

export interface SubscribeRequest {
  channels: string[];
  since?: Since;
}
export interface UnsubscribeRequest {
  channels: string[];
}
export interface ClientPublishRequest {
  channel: string;
  event: string;
  data?: unknown;
}
export interface RefreshRequest {
  token: string;
}

export interface ClientToServerEvents {
  subscribe(req: SubscribeRequest, ack?: Ack<{ channels: Record<string, ChannelAnswer> }>): void;
  unsubscribe(req: UnsubscribeRequest, ack?: Ack): void;
  publish(req: ClientPublishRequest, ack?: Ack<{ id: string; offset: number }>): void;
  refresh(req: RefreshRequest, ack?: Ack<{ expiresAt: number }>): void;
}

export interface ConnectedEvent {
  user: string;
  node: string;
  /** Token expiry, seconds since the epoch: refresh before it. */
  expiresAt: number;
  /** The user's own channel and the broadcast channel, with recovery results for `auth.since`. */
  channels: Record<string, ChannelAnswer>;
}

export interface DisconnectNotice {
  code: number;
  reason: string;
  message: string;
  /** Whether the client should reconnect at once (and recover). */
  reconnect: boolean;
}

/** A user's first socket joined a presence channel anywhere in the cluster, or their last one left. */
export interface PresenceNotice {
  channel: string;
  user: string;
  /** The user's `user_info` (the token's claim), when the member has one. */
  user_info?: unknown;
}

export interface ServerToClientEvents {
  'pushrelay:connected'(event: ConnectedEvent): void;
  'pushrelay:disconnect'(notice: DisconnectNotice): void;
  'pushrelay:join'(notice: PresenceNotice): void;
  'pushrelay:leave'(notice: PresenceNotice): void;
  /** Every published event: the data, then where it sits in its channel (a Meta). */
  // biome-ignore lint/suspicious/noExplicitAny: published events carry any JSON value
  [event: string]: (...args: any[]) => void;
}

/** What the admin routes ask every node to do to one user's sockets. */
export type UserOperation =
  | { op: 'disconnect'; user: string }
  | { op: 'subscribe'; user: string; channels: string[] }
  | { op: 'unsubscribe'; user: string; channels: string[] };

export interface InterServerEvents {
  /** Answers how many of the user's sockets on the node it reached were affected. */
  'pushrelay:user': (operation: UserOperation, ack: (sockets: number) => void) => void;
  /** laravel-echo-server's channel list: each node answers its channels starting with the prefix, with socket counts. */
  'pushrelay:echo-channels': (prefix: string, ack: (channels: Record<string, number>) => void) => void;
}

export interface SocketData {
  user: string;
  /** Token expiry, seconds since the epoch. */
  exp: number;
  patterns: readonly string[];
  /** The token's `user_info` claim as JSON text: the socket's presence info in every channel. */
  userInfo?: string | undefined;
  /** The token's `watch` claim: a user's own channel the socket receives too (the console's tail). */
  watch?: string | undefined;
  /**
   * Who the socket is in particular channels, where that is not `user` with
   * `userInfo` (Laravel Echo's presence channels take it from the auth
   * endpoint's `channel_data`). Kept for re-registering presence.
   */
  presenceAs?: Map<string, Member>;
  /** The socket speaks Laravel Echo's protocol (PUSHRELAY_ECHO=on, connected without a token). */
  echo?: true;
  /** Echo: channels whose auth call is in flight. */
  echoPending?: Set<string>;
  /** The socket's packet rate-limit bucket, made at its first packet. */
  bucket?: BucketState;
  /** The second (`Math.ceil(exp)`) under which the node's expiry wheel keeps the socket; undefined when not armed. */
  expirySecond?: number | undefined;
  /**
   * Channels an admin route put the socket in (server-side subscribe): the
   * token never had to allow them, so a `refresh` does not take them away.
   */
  serverChannels?: Set<string>;
  /** Channels being joined by subscribe requests still in flight (they count against the limit). */
  joining?: number;
  /** Why the relay ended this socket, for the disconnect metric (Socket.IO's own reason says only "forced close"). */
  disconnectReason?: DisconnectReason;
}

export type RelayServer = Server<ClientToServerEvents, ServerToClientEvents, InterServerEvents, SocketData>;
export type RelaySocket = Socket<ClientToServerEvents, ServerToClientEvents, InterServerEvents, SocketData>;
