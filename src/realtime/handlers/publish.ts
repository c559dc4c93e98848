import type { NamespaceOptions } from '../../config/index.js';
import { RelayError } from '../../errors.js';
import type { Ingest } from '../../ingest/ingest.js';
import { checkValue } from '../../ingest/json.js';
import { assertClientChannel } from '../../ingest/message.js';
import type { RelaySocket } from '../events.js';
import { type Handler, isObject } from './answer.js';

export interface ClientPublishDeps {
  readonly ingest: Ingest;
  readonly namespace: (channel: string) => NamespaceOptions;
  readonly allowed: (socket: RelaySocket, channel: string) => boolean;
  readonly maxJsonDepth: number;
}

/** A client publishing to a channel, where the channel's namespace allows it: the same path and limits as HTTP. */
export function publishHandler(deps: ClientPublishDeps): Handler {
  return async (socket, request) => {
    if (!isObject(request)) throw new RelayError('bad_request', 'publish takes { channel, event, data }');
    const { channel, event, data } = request;
    assertClientChannel(channel);
    if (!deps.namespace(channel).publish) {
      throw new RelayError('publish_not_allowed', `clients may not publish to channel "${channel}"`);
    }
    if (!deps.allowed(socket, channel)) {
      throw new RelayError('channel_not_allowed', `the token does not allow channel "${channel}"`);
    }
    checkValue(data, deps.maxJsonDepth);
    const result = await deps.ingest.publish({ event: event as string, data, channels: [channel] }, 'socket');
    return { id: result.id, offset: result.channels[channel]!.offset };
  };
}
