// resources/js/echo.js (or bootstrap.js), unchanged from laravel-echo-server days:
// the socket.io connector with the stock socket.io-client v4.
import Echo from 'laravel-echo';
import { io } from 'socket.io-client';

window.Echo = new Echo({
  broadcaster: 'socket.io',
  client: io,
  // The relay, where laravel-echo-server was.
  host: `${window.location.hostname}:6001`,
  // Echo reads the CSRF token from <meta name="csrf-token">; the relay forwards it
  // (and the session cookie) to /broadcasting/auth.
});

window.Echo.private(`orders.${window.userId}`).listen('OrderShipped', (e) => {
  console.log('shipped', e.order);
});

window.Echo.join('chat.1')
  .here((users) => console.log('here', users))
  .joining((user) => console.log('joining', user))
  .leaving((user) => console.log('leaving', user))
  .listenForWhisper('typing', (e) => console.log('typing', e));
