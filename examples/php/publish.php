<?php
// Publishes a message with PHP's curl extension.
//   PUSHRELAY_URL=http://localhost:8080 PUSHRELAY_SECRET=... php publish.php alice

$relay = getenv('PUSHRELAY_URL') ?: 'http://localhost:8080';
$secret = getenv('PUSHRELAY_SECRET');
$user = $argv[1] ?? 'alice';

$message = [
    'event' => 'invoice',
    'data' => ['url' => 'https://shop.example/invoices/42.pdf', 'customer' => 'José', 'lines' => []],
    'users' => [$user],
    'id' => 'invoice-42-' . $user, // a retried request with the same id is delivered once
];

$ch = curl_init($relay . '/v1/publish');
curl_setopt_array($ch, [
    CURLOPT_POST => true,
    CURLOPT_RETURNTRANSFER => true,
    CURLOPT_TIMEOUT => 5,
    CURLOPT_HTTPHEADER => ['Content-Type: application/json', 'Authorization: Bearer ' . $secret],
    // A JSON string, not the array: curl sends an array as multipart/form-data, which the relay refuses (415).
    CURLOPT_POSTFIELDS => json_encode($message),
]);
$body = curl_exec($ch);
if ($body === false) {
    fwrite(STDERR, 'relay unreachable: ' . curl_error($ch) . "\n");
    exit(1);
}
$status = curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
$answer = json_decode($body, true);
if ($status !== 200) {
    fwrite(STDERR, "refused: {$answer['error']['code']}: {$answer['error']['message']}\n");
    exit(1);
}
if (in_array($user, $answer['offline'], true)) {
    echo "$user is offline: send an e-mail instead\n";
}
echo "published {$answer['id']}\n";
