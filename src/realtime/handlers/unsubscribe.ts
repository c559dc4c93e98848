import { assertClientChannel } from '../../ingest/message.js';
import type { Hub } from '../hub.js';
import { channelList, type Handler } from './answer.js';

export function unsubscribeHandler(hub: Hub, maxChannels: number): Handler {
  return async (socket, request) => {
    const channels = channelList(request, 'unsubscribe', maxChannels);
    for (const c of channels) assertClientChannel(c);
    for (const c of channels) {
      // Left by the client's own choice: joining again is up to its token.
      socket.data.serverChannels?.delete(c);
      hub.detach(socket, c);
    }
    return {};
  };
}
