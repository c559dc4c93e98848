import type { Logger } from 'pino';
import { type CommonOptions, MemoryPresence } from './memory.js';
import { RedisPresence, type RedisPresenceOptions } from './redis.js';
import type { Presence } from './types.js';

export {
  ECHO_PRESENCE_PREFIX,
  infoValue,
  infoWithin,
  type PresenceChannelPredicate,
  presenceChannels,
} from './events.js';
export type {
  ChannelMember,
  LocalMembership,
  Member,
  NodeCounters,
  NodeInfo,
  Presence,
  PresenceEvent,
  PresenceEventType,
  PresenceListener,
} from './types.js';
export { PRESENCE_EVENT_TYPES } from './types.js';

export type PresenceOptions =
  | (CommonOptions & { kind: 'memory'; log?: Logger })
  | (RedisPresenceOptions & { kind: 'redis' });

export function createPresence(options: PresenceOptions): Presence {
  switch (options.kind) {
    case 'memory':
      return new MemoryPresence(options);
    case 'redis':
      return new RedisPresence(options);
    default:
      throw new Error(`unknown presence kind: ${(options as { kind: string }).kind}`);
  }
}
