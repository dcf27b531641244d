import com.typesafe.sbt.packager.docker.{Cmd, ExecCmd}

// AWS's Java 21 base image, pinned by digest (its linux/amd64 image of July 2026, Corretto
// 21.0.11): `n10n-dev check-base` says when :21 moves on, `check-base --update` moves the digits.
val lambdaJavaBase = "public.ecr.aws/lambda/java:21@sha256:1dac9793c19eba748139fa1b9c722b36242425b61936419dea33e3d122e6e336"

// Offline tests build on a stand-in: LAMBDA_JAVA_BASE=<repository>:<tag>@sha256:<digest>.
val baseImage = sys.env.getOrElse("LAMBDA_JAVA_BASE", lambdaJavaBase)

// `<repository>@sha256:<digest>` of the base actually used, for `n10n-dev check-base`.
val baseDigestRef = baseImage.split("@sha256:") match {
  case Array(named, digest) =>
    val repository = named.lastIndexOf(':') match {
      case i if i > named.lastIndexOf('/') => named.take(i)
      case _                               => named
    }
    s"$repository@sha256:$digest"
  case _ => sys.error(s"the base image $baseImage is not pinned by digest (<repository>:<tag>@sha256:<digest>)")
}

lazy val root = (project in file("."))
  .enablePlugins(JavaAppPackaging, DockerPlugin)
  .settings(
    name := "notification-worker",
    scalaVersion := "2.13.18",
    javacOptions ++= Seq("--release", "17"),
    scalacOptions ++= Seq("-release", "17"),
    libraryDependencies += "com.amazonaws" % "aws-lambda-java-core" % "1.4.0",
    // build-image names the image it wants in N10N_IMAGE (<name>:<tag>); by hand: `dev`.
    Docker / packageName := "notification-worker",
    Docker / version := sys.env.get("N10N_IMAGE").map(_.split(':').last).getOrElse("dev"),
    // AWS's layout: the jars in /var/task/lib (one layer for the dependencies, one for the
    // project's own), the base's entrypoint, and a handler as the command (each function picks
    // its own through ImageConfig.Command).
    Docker / defaultLinuxInstallLocation := "/var/task",
    dockerCommands := {
      val layers = (Docker / dockerLayerMappings).value.map(_.layerId).distinct.sorted
      Seq(Cmd("FROM", baseImage), Cmd("LABEL", s"sdkBaseVersion=$baseDigestRef")) ++
        layers.map(layer => Cmd("COPY", layer.fold("var/task")(id => s"$id/var/task"), "/var/task")) ++
        Seq(
          ExecCmd("ENTRYPOINT", "/lambda-entrypoint.sh"),
          ExecCmd("CMD", "com.example.notifications.Harvester::handleRequest")
        )
    }
  )
