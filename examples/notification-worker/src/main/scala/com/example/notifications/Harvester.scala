package com.example.notifications

/** Gathers the notifications due to be sent. */
class Harvester extends NotificationHandler("harvester")
