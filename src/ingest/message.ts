import { RelayError } from '../errors.js';

// Names and encodings shared by every publish path and every node.

/** Characters allowed in channel segments and user ids. No `*` (patterns), no braces (Redis hash tags), no `/`. */
const NAME_CHARS = 'A-Za-z0-9_.@=+|!~,;-';
const CHANNEL_RE = new RegExp(`^[${NAME_CHARS}]+(?::[${NAME_CHARS}]+)*$`);
const USER_RE = new RegExp(`^[:${NAME_CHARS}]{1,128}$`);
export const MAX_CHANNEL_LENGTH = 200;

/** The channel every socket is in; broadcasts travel on it. */
export const BROADCAST_CHANNEL = '$broadcast';

/**
 * With PUSHRELAY_ECHO=on every socket is in one of these rooms, by the
 * protocol it speaks, so a delivery can take each front end's shape. Like
 * `$broadcast`, no client can name them (`$` is not a channel character).
 */
export const ECHO_ROOM = '$echo';
export const NATIVE_ROOM = '$native';

/**
 * Whether presence keeps a member list for a channel. Everyone is in the
 * broadcast channel: it is counted from node totals, never member by member;
 * the protocol rooms are not channels.
 */
export function listsMembers(channel: string): boolean {
  // `$broadcast`, the protocol rooms and the console's watch rooms (`$watch:user:<id>`):
  // no client can name a `$` room, and none has members to list.
  return !channel.startsWith('$');
}

/**
 * The room an operator's tail socket joins to watch a user's own channel:
 * it receives what the user receives without being in `user:<id>`, so the
 * user is not counted online, and the watcher is in no presence list.
 */
export function watchRoom(channel: string): string {
  return `$watch:${channel}`;
}

/** Inverse of `watchRoom`; undefined for other rooms. */
export function watchedChannel(room: string): string | undefined {
  return room.startsWith('$watch:') ? room.slice('$watch:'.length) : undefined;
}
export const USER_NAMESPACE = 'user';

export function userChannel(user: string): string {
  return `${USER_NAMESPACE}:${user}`;
}

export function isUserId(user: unknown): user is string {
  return typeof user === 'string' && USER_RE.test(user);
}

export function isChannelName(channel: unknown): channel is string {
  return typeof channel === 'string' && channel.length <= MAX_CHANNEL_LENGTH && CHANNEL_RE.test(channel);
}

/** A channel a client or publisher may name directly: valid, not a user's own channel, not a system one. */
export function assertClientChannel(channel: unknown): asserts channel is string {
  if (!isChannelName(channel)) {
    throw new RelayError(
      'invalid_channel',
      `invalid channel name ${JSON.stringify(channel)}: use 1-${MAX_CHANNEL_LENGTH} characters of A-Z a-z 0-9 ${NAME_CHARS.slice(9)} with ':' between segments`,
    );
  }
  if (channel.startsWith(`${USER_NAMESPACE}:`)) {
    throw new RelayError(
      'invalid_channel',
      `channel "${channel}" is in the reserved "user" namespace: target users with "users" instead`,
    );
  }
}

export function assertUserId(user: unknown): asserts user is string {
  if (!isUserId(user)) {
    throw new RelayError(
      'invalid_user',
      `invalid user id ${JSON.stringify(user)}: use 1-128 characters of A-Z a-z 0-9 ${NAME_CHARS.slice(9)}:`,
    );
  }
}

/**
 * Socket.IO's reserved event names (socket.io-parser refuses packets that
 * carry them, so a client receiving one would drop the connection), plus the
 * relay's own `pushrelay:*` events.
 */
export const RESERVED_EVENTS: ReadonlySet<string> = new Set([
  'connect',
  'connect_error',
  'disconnect',
  'disconnecting',
  'newListener',
  'removeListener',
]);
const EVENT_RE = /^[^\u0000-\u001f\u007f]{1,100}$/;

export function assertEventName(event: unknown): asserts event is string {
  if (typeof event !== 'string' || !EVENT_RE.test(event)) {
    throw new RelayError(
      'invalid_event',
      `invalid event name ${JSON.stringify(event)}: use 1-100 printable characters`,
    );
  }
  if (RESERVED_EVENTS.has(event) || event.startsWith('pushrelay:')) {
    throw new RelayError(
      'reserved_event',
      `event name "${event}" is reserved (Socket.IO or pushrelay:* events)`,
    );
  }
}

/** Events the relay itself emits to clients. */
export const SERVER_EVENTS = {
  connected: 'pushrelay:connected',
  disconnect: 'pushrelay:disconnect',
  join: 'pushrelay:join',
  leave: 'pushrelay:leave',
} as const;

// ---------------------------------------------------------------------------
// A publication as it is stored in history and carried between nodes.

export interface Publication {
  readonly id: string;
  readonly event: string;
  /** The message data, as JSON text; encoded once per publish. */
  readonly data: string;
  /** Milliseconds since the epoch, at the node that accepted the publish. */
  readonly ts: number;
  /** Users whose sockets do not receive it. */
  readonly except?: readonly string[] | undefined;
  /** Socket ids that do not receive it (Laravel's `toOthers()`: the socket whose request caused it). */
  readonly exceptSockets?: readonly string[] | undefined;
}

/** A publication read back: data is a value again. */
export interface Message {
  readonly id: string;
  readonly event: string;
  readonly data: unknown;
  readonly ts: number;
  readonly except?: readonly string[] | undefined;
  readonly exceptSockets?: readonly string[] | undefined;
}

/** The message a publication delivers: its data parsed (`value`, when the caller has it already). */
export function messageOf(p: Publication, value: unknown = JSON.parse(p.data)): Message {
  return {
    id: p.id,
    event: p.event,
    data: value,
    ts: p.ts,
    except: p.except,
    exceptSockets: p.exceptSockets,
  };
}

/** Encoded once per publish and shared by every channel it targets; `d` stays last so data is never re-encoded. */
export function encodePublication(p: Publication): string {
  const except = p.except && p.except.length > 0 ? `,"x":${JSON.stringify(p.except)}` : '';
  const sockets =
    p.exceptSockets && p.exceptSockets.length > 0 ? `,"s":${JSON.stringify(p.exceptSockets)}` : '';
  return `{"i":${JSON.stringify(p.id)},"e":${JSON.stringify(p.event)},"t":${p.ts}${except}${sockets},"d":${p.data}}`;
}

interface Encoded {
  i: string;
  e: string;
  t: number;
  x?: string[];
  s?: string[];
  d: unknown;
}

/**
 * A stored or delivered publication that cannot be sent to sockets: Redis is
 * trusted, but whatever reaches it (an operator's PUBLISH on a delivery
 * channel, a bug in another version) must not take a node down. `reason` is
 * a short label for metrics and logs.
 */
export class MalformedPublication extends Error {
  constructor(readonly reason: 'invalid_json' | 'invalid_shape' | 'reserved_event' | 'invalid_event') {
    super(`malformed publication: ${reason}`);
    this.name = 'MalformedPublication';
  }
}

/**
 * Reads a publication back from history or a delivery channel, checking
 * everything a socket emit relies on: an event name Socket.IO does not
 * reserve (emitting `connect` throws), string id, numeric time, string list
 * of excepted users. Throws MalformedPublication otherwise.
 */
export function decodePublication(text: string): Message {
  let o: Encoded;
  try {
    o = JSON.parse(text) as Encoded;
  } catch {
    throw new MalformedPublication('invalid_json');
  }
  if (
    typeof o !== 'object' ||
    o === null ||
    Array.isArray(o) ||
    typeof o.i !== 'string' ||
    typeof o.e !== 'string' ||
    typeof o.t !== 'number' ||
    !Number.isFinite(o.t) ||
    (o.x !== undefined && !(Array.isArray(o.x) && o.x.every((u) => typeof u === 'string'))) ||
    (o.s !== undefined && !(Array.isArray(o.s) && o.s.every((u) => typeof u === 'string')))
  ) {
    throw new MalformedPublication('invalid_shape');
  }
  try {
    assertEventName(o.e);
  } catch (err) {
    throw new MalformedPublication(
      err instanceof RelayError && err.code === 'reserved_event' ? 'reserved_event' : 'invalid_event',
    );
  }
  return { id: o.i, event: o.e, data: o.d, ts: o.t, except: o.x, exceptSockets: o.s };
}

/** The reason label of a decode failure (anything that is not a MalformedPublication is a shape problem). */
export function malformedReason(err: unknown): string {
  return err instanceof MalformedPublication ? err.reason : 'invalid_shape';
}

/**
 * The epoch of a channel Redis holds nothing for: never published to, or its
 * last publish is older than its retention. Reading such a channel creates
 * nothing; its first publish gives it a real epoch, which nodes and clients
 * at this epoch and offset 0 take over without a resync (they missed nothing).
 */
export const UNBORN_EPOCH = '0';

/** Position of a message in a channel's history: offsets increase by one; a new epoch means history was lost. */
export interface Position {
  readonly offset: number;
  readonly epoch: string;
}

/** A message on its way to the sockets of one channel. */
export interface Delivery extends Position {
  readonly channel: string;
  readonly message: Message;
}

/** What a client receives as the second argument of every event. */
export interface Meta {
  id: string;
  channel: string;
  offset: number;
  epoch: string;
  ts: number;
}
