<?php

namespace App\Events;

use App\Models\Order;
use Illuminate\Broadcasting\InteractsWithSockets;
use Illuminate\Broadcasting\PrivateChannel;
use Illuminate\Contracts\Broadcasting\ShouldBroadcast;
use Illuminate\Foundation\Events\Dispatchable;
use Illuminate\Queue\SerializesModels;

// broadcast(new OrderShipped($order))->toOthers();
// reaches Echo's .private(`orders.${userId}`).listen('OrderShipped', ...) as
// event "App\Events\OrderShipped" on channel "private-orders.<user id>", with
// {"order": {...}, "socket": <X-Socket-ID of the request or null>}; the socket
// that made the request (toOthers) is left out on whichever relay node it is.
class OrderShipped implements ShouldBroadcast
{
    use Dispatchable, InteractsWithSockets, SerializesModels;

    public function __construct(public Order $order)
    {
    }

    public function broadcastOn(): PrivateChannel
    {
        return new PrivateChannel('orders.'.$this->order->user_id);
    }
}
