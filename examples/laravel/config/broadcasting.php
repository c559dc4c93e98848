<?php

// config/broadcasting.php (the parts the Redis broadcaster reads), unchanged.
return [
    'default' => env('BROADCAST_CONNECTION', env('BROADCAST_DRIVER', 'null')),

    'connections' => [
        // RedisBroadcaster PUBLISHes {"event", "data", "socket"} on
        // <database.redis.options.prefix><channel> through this Redis connection.
        'redis' => [
            'driver' => 'redis',
            'connection' => 'default',
        ],
    ],
];
