package com.example.notifications

import java.util.{Map => JMap}

import scala.jdk.CollectionConverters._

import com.amazonaws.services.lambda.runtime.{Context, RequestHandler}

/** What the three handlers share: each answers with its name, the event's `id` and what Lambda
  * told it about the invocation. An event with `"fail": true` makes it throw (a function error),
  * one with `"sleepMs": N` makes it sleep first (a timeout, when N is past the function's limit),
  * one with `"allocateMb": N` makes it hold N MB (past the function's memory: out of memory).
  */
abstract class NotificationHandler(name: String)
    extends RequestHandler[JMap[String, Object], JMap[String, Object]] {

  final override def handleRequest(event: JMap[String, Object], context: Context): JMap[String, Object] = {
    context.getLogger.log(s"$name: notification ${event.get("id")}\n")
    Option(event.get("sleepMs")).foreach(ms => Thread.sleep(ms.toString.toLong))
    val held = Option(event.get("allocateMb")).map(mb => Array.fill(mb.toString.toInt)(new Array[Byte](1 << 20)))
    if (java.lang.Boolean.TRUE == event.get("fail"))
      throw new IllegalStateException(s"$name could not send notification ${event.get("id")}")
    Map[String, Object](
      "handler" -> name,
      "id" -> event.get("id"),
      "functionName" -> context.getFunctionName,
      "requestId" -> context.getAwsRequestId,
      "memoryLimitMb" -> Int.box(context.getMemoryLimitInMB),
      "remainingMs" -> Int.box(context.getRemainingTimeInMillis),
      "traceId" -> Option(System.getProperty("com.amazonaws.xray.traceHeader")).getOrElse(""),
      "clientContext" -> Option(context.getClientContext).map(_.getCustom).orNull,
      "heldMb" -> Int.box(held.map(_.length).getOrElse(0))
    ).asJava
  }
}
