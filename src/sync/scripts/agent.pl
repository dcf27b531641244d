use strict;
use Socket;
use POSIX ();
my ($path, $root, $idle) = @ARGV;
(my $dir = $path) =~ s{/[^/]*$}{};
mkdir $dir, 0700;
my @d = lstat $dir;
exit 1 unless @d && -d _ && $d[4] == $< && ($d[2] & 077) == 0;
socket(my $check, PF_UNIX, SOCK_STREAM, 0) or exit 1;
exit 0 if connect($check, pack_sockaddr_un($path));
close $check;
unlink $path;
socket(my $server, PF_UNIX, SOCK_STREAM, 0) or exit 1;
umask 077;
bind($server, pack_sockaddr_un($path)) or exit 1;
listen($server, 16) or exit 1;
my $inode = (stat $path)[1];
open(my $random, '<', '/dev/urandom') or exit 1;
sysread($random, my $raw, 16) == 16 or exit 1;
my $token = unpack('H*', $raw);
open(my $tf, '>', "$path.token.new") or exit 1;
print $tf $token;
close($tf) or exit 1;
rename("$path.token.new", "$path.token") or exit 1;
defined(my $pid = fork) or exit 1;
exit 0 if $pid;
POSIX::setsid();
chdir '/';
open STDIN, '<', '/dev/null'; open STDOUT, '>', '/dev/null'; open STDERR, '>', '/dev/null';
$ENV{N10N_AGENT_SOCKET} = $path;
$SIG{CHLD} = 'IGNORE';
my $last_used = time;
while (1) {
  my $rin = ''; vec($rin, fileno($server), 1) = 1;
  my $ready = select(my $rout = $rin, undef, undef, 30);
  my @st = stat $path;
  exit 0 unless @st && $st[1] == $inode && -d $root;
  if ($ready <= 0) { exit 0 if time - $last_used >= $idle; next; }
  accept(my $conn, $server) or next;
  $last_used = time;
  my $child = fork;
  if (defined $child && $child == 0) { close $server; serve($conn); POSIX::_exit(0); }
  close $conn;
}
sub serve {
  my $conn = shift;
  $SIG{CHLD} = 'DEFAULT';
  write_all($conn, "n10n-agent-hello $token\n") or return;
  my ($mode, $length) = ('', '');
  while (1) {
    sysread($conn, my $c, 1) == 1 or return;
    if ($mode eq '' && $length eq '' && $c eq 's') { $mode = 's'; next; }
    last if $c eq "\n";
    $length .= $c;
    return if length($length) > 12 || $c !~ /[0-9]/;
  }
  my $command = '';
  while (length($command) < $length) {
    sysread($conn, my $buf, $length - length($command)) or return;
    $command .= $buf;
  }
  return stream($conn, $command) if $mode eq 's';
  open(my $out, '+>', undef) or return;
  open(my $err, '+>', undef) or return;
  my $pid = fork;
  return unless defined $pid;
  if ($pid == 0) {
    setpgrp(0, 0);
    open(STDIN, '<&', $conn); open(STDOUT, '>&', $out); open(STDERR, '>&', $err);
    exec('/bin/sh', '-c', $command);
    POSIX::_exit(127);
  }
  waitpid($pid, 0);
  my $status = ($? & 127) ? 128 + ($? & 127) : $? >> 8;
  my ($o, $e) = ('', '');
  seek($out, 0, 0); { local $/; $o = <$out> // ''; }
  seek($err, 0, 0); { local $/; $e = <$err> // ''; }
  write_all($conn, "n10n-agent $status " . length($o) . ' ' . length($e) . "\n" . $o . $e);
}
sub write_all {
  my ($conn, $data) = @_;
  while (length $data) {
    my $n = syswrite($conn, $data) or return 0;
    substr($data, 0, $n) = '';
  }
  return 1;
}
# Streaming mode: stdout and stderr as they come, as frames `o`/`e` + 4-byte length + bytes,
# then `x` + 4-byte exit status. The command leads its own process group, so that n10n-dev can
# signal the whole of it.
sub stream {
  my ($conn, $command) = @_;
  pipe(my $or, my $ow) or return;
  pipe(my $er, my $ew) or return;
  my $pid = fork;
  return unless defined $pid;
  if ($pid == 0) {
    setpgrp(0, 0);
    close $or; close $er;
    open(STDIN, '<&', $conn); open(STDOUT, '>&', $ow); open(STDERR, '>&', $ew);
    exec('/bin/sh', '-c', $command);
    POSIX::_exit(127);
  }
  close $ow; close $ew;
  my %open = (o => $or, e => $er);
  while (%open) {
    my $rin = '';
    vec($rin, fileno($_), 1) = 1 for values %open;
    next if select(my $rout = $rin, undef, undef, undef) <= 0;
    for my $tag (keys %open) {
      my $fh = $open{$tag};
      next unless vec($rout, fileno($fh), 1);
      my $n = sysread($fh, my $buf, 65536);
      if (!$n) { delete $open{$tag}; next; }
      write_all($conn, $tag . pack('N', $n) . $buf) or do { kill('TERM', -$pid); return };
    }
  }
  waitpid($pid, 0);
  my $status = ($? & 127) ? 128 + ($? & 127) : $? >> 8;
  write_all($conn, 'x' . pack('N', $status));
}
