package com.example.notifications

/** Sends notifications to iOS devices. */
class IosSender extends NotificationHandler("ios-sender")
