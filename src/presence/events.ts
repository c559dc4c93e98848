import type { Logger } from 'pino';
import { USER_NAMESPACE } from '../ingest/message.js';
import type { PresenceEvent, PresenceListener } from './types.js';

/** Laravel Echo's presence channels are named `presence-<name>`. */
export const ECHO_PRESENCE_PREFIX = 'presence-';

/** Which channels list their members with `member.*` events and `pushrelay:join` / `pushrelay:leave` notices. */
export type PresenceChannelPredicate = (channel: string) => boolean;

/**
 * The one rule for presence channels: a namespace configured with
 * `presence: true`, or a Laravel Echo presence channel (`presence-*`), which
 * is the same channel whichever protocol a socket speaks.
 */
export function presenceChannels(namespacePresence: (channel: string) => boolean): PresenceChannelPredicate {
  return (channel) => channel.startsWith(ECHO_PRESENCE_PREFIX) || namespacePresence(channel);
}

/**
 * What one join or leave changed, as the driver's write decided it
 * atomically: whether it was the user's first (last) socket in the channel,
 * and whether the user was the channel's first (last) member.
 */
export interface Change {
  readonly kind: 'join' | 'leave';
  readonly channel: string;
  readonly user: string;
  readonly info?: string | undefined;
  /** The user's first socket in the channel came, or their last one went. */
  readonly userEdge: boolean;
  /** The channel's first user came, or its last one went. */
  readonly channelEdge: boolean;
  readonly socket?: string | undefined;
}

/** The events a change produces: `user.*` for users' own channels, `channel.*` and `member.*` for the others. */
export function eventsOf(
  change: Change,
  isPresenceChannel: PresenceChannelPredicate,
  node: string,
  ts: number,
): PresenceEvent[] {
  if (!change.userEdge) return [];
  const { channel, user, info, socket } = change;
  const join = change.kind === 'join';
  const extra = { ...(info !== undefined ? { info } : {}), ...(socket !== undefined ? { socket } : {}) };
  if (channel.startsWith(`${USER_NAMESPACE}:`)) {
    const sock = socket !== undefined ? { socket } : {};
    return [
      join
        ? { type: 'user.online', ts, node, user, ...extra }
        : { type: 'user.offline', ts, node, user, ...sock },
    ];
  }
  const out: PresenceEvent[] = [];
  // Occupied before the member arrives, vacated after it left: a receiver sees a member only in an occupied channel.
  if (join && change.channelEdge) out.push({ type: 'channel.occupied', ts, node, channel });
  if (isPresenceChannel(channel)) {
    out.push({ type: join ? 'member.added' : 'member.removed', ts, node, channel, user, ...extra });
  }
  if (!join && change.channelEdge) out.push({ type: 'channel.vacated', ts, node, channel });
  return out;
}

/** Listeners of a driver's events; one that throws is logged and does not stop the others. */
export class PresenceEmitter {
  private listeners: PresenceListener[] = [];

  constructor(private readonly log: Logger | undefined) {}

  on(listener: PresenceListener): () => void {
    this.listeners = [...this.listeners, listener];
    return () => {
      this.listeners = this.listeners.filter((l) => l !== listener);
    };
  }

  emit(events: readonly PresenceEvent[]): void {
    for (const event of events) {
      for (const listener of this.listeners) {
        try {
          listener(event);
        } catch (err) {
          this.log?.error({ err, event: event.type }, 'presence event listener failed');
        }
      }
    }
  }
}

/** Byte length of `info` as UTF-8; over `maxBytes` it is refused. */
export function infoWithin(info: string | undefined, maxBytes: number): boolean {
  return info === undefined || Buffer.byteLength(info) <= maxBytes;
}

/**
 * `user_info` text as the value clients and HTTP answers carry. Presence
 * stores only JSON it was given; text that does not parse (written by
 * something else) is left out rather than failing the answer.
 */
export function infoValue(info: string | undefined): unknown {
  if (info === undefined) return undefined;
  try {
    return JSON.parse(info);
  } catch {
    return undefined;
  }
}
