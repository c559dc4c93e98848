// Publishes with the SDK this package ships:
//   PUSHRELAY_URL=http://localhost:8080 PUSHRELAY_SECRET=... node examples/node/publish.mjs alice
// (in your app: npm install pushrelay)
import { Publisher, PublisherError } from 'pushrelay/publisher';

const relay = new Publisher({
  url: process.env.PUSHRELAY_URL ?? 'http://localhost:8080',
  secret: process.env.PUSHRELAY_SECRET ?? '',
  keyName: process.env.PUSHRELAY_KEY_NAME, // set it to sign requests instead of sending the secret
});
const user = process.argv[2] ?? 'alice';

try {
  const answer = await relay.publish({
    event: 'shipped',
    data: { order: 42, carrier: 'DHL' },
    users: [user],
    id: `order-42-shipped-${user}`, // retries (the SDK's and yours) deliver once
  });
  if (answer.offline.includes(user)) console.log(`${user} is offline: send an e-mail instead`);
  else console.log(`delivered to ${answer.online.sockets} socket(s) as ${answer.id}`);
} catch (err) {
  if (!(err instanceof PublisherError)) throw err;
  console.error(`refused: ${err.code}: ${err.message}`);
  process.exit(1);
}
