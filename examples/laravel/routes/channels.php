<?php

use Illuminate\Support\Facades\Broadcast;

// Asked by the relay for every private-* and presence-* subscription: it POSTs
// channel_name and socket_id to /broadcasting/auth with the browser's session
// cookie and Echo's X-CSRF-TOKEN, as laravel-echo-server did.

Broadcast::channel('orders.{userId}', fn ($user, $userId) => (int) $user->id === (int) $userId);

// A presence channel: what the callback returns is the member's user_info,
// which here()/joining()/leaving() hand to the page.
Broadcast::channel('chat.{room}', fn ($user, $room) => ['id' => $user->id, 'name' => $user->name]);
