use strict;
use Socket;
use POSIX ();
use File::Path ();
my ($path, $root, $idle) = @ARGV;
# The user's umask, as the session that started the agent had it: what the agent applies and
# runs gets it back (its own socket and token are private).
my $user_umask = umask;
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
$ENV{N10N_UID} = $<;
$SIG{CHLD} = 'IGNORE';
my $last_used = time;
while (1) {
  my $rin = ''; vec($rin, fileno($server), 1) = 1;
  my $ready = select(my $rout = $rin, undef, undef, 30);
  my @st = stat $path;
  exit 0 unless @st && $st[1] == $inode;
  quit() unless -d $root;
  if ($ready <= 0) { quit() if time - $last_used >= $idle; next; }
  accept(my $conn, $server) or next;
  $last_used = time;
  my $child = fork;
  if (defined $child && $child == 0) { close $server; serve($conn); POSIX::_exit(0); }
  close $conn;
}
# Leave no socket behind: tests and long-lived machines would collect them by the thousand.
sub quit {
  unlink $path, "$path.token", "$path.env";
  exit 0;
}
sub serve {
  my $conn = shift;
  $SIG{CHLD} = 'DEFAULT';
  write_all($conn, "n10n-agent-hello $token\n") or return;
  my ($mode, $length) = ('', '');
  while (1) {
    sysread($conn, my $c, 1) == 1 or return;
    if ($mode eq '' && $length eq '' && $c eq 'r') { $mode = 'r'; next; }
    last if $c eq "\n";
    $length .= $c;
    return if length($length) > 12 || $c !~ /[0-9]/;
  }
  my $command = '';
  while (length($command) < $length) {
    sysread($conn, my $buf, $length - length($command)) or return;
    $command .= $buf;
  }
  return run_command($conn, $command) if $mode eq 'r';
  open(my $out, '+>', undef) or return;
  open(my $err, '+>', undef) or return;
  my $pid = fork;
  return unless defined $pid;
  if ($pid == 0) {
    setpgrp(0, 0);
    open(STDIN, '<&', $conn); open(STDOUT, '>&', $out); open(STDERR, '>&', $err);
    umask $user_umask;
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
# Run mode: a command with the user's login environment (see login_env), in a directory. The
# request is NUL-separated fields: the replica, the workdir (empty: none), the number of
# variables, the `KEY=VALUE`s, then the command's argv. The reply is frames: `p` + 4-byte pid
# first, then stdout and stderr as they come, `o`/`e` + 4-byte length + bytes, then `x` +
# 4-byte exit status. The command leads its own process group, so that n10n-dev can signal the
# whole of it; its stdin is the rest of the stream.
sub run_command {
  my ($conn, $request) = @_;
  my ($replica, $workdir, $count, @rest) = split /\0/, $request, -1;
  return unless defined $count && $count =~ /^[0-9]+$/ && @rest > $count;
  my @env = splice(@rest, 0, $count);
  my %login = login_env();
  pipe(my $or, my $ow) or return;
  pipe(my $er, my $ew) or return;
  my $pid = fork;
  return unless defined $pid;
  if ($pid == 0) {
    setpgrp(0, 0);
    open(STDIN, '<&', $conn); open(STDOUT, '>&', $ow); open(STDERR, '>&', $ew);
    enter($replica, $workdir, $login{HOME});
    %ENV = %login if %login;
    for (@env) { my ($k, $v) = split /=/, $_, 2; $ENV{$k} = $v; }
    # No login environment could be captured: the command's own login shell makes it.
    @rest = ($login{SHELL}, '-lc', 'exec "$@"', 'sh', @rest) if $login{N10N_LOGIN_SHELL};
    delete $ENV{N10N_LOGIN_SHELL};
    umask $user_umask;
    exec { $rest[0] } @rest;
    my $code = $!{ENOENT} ? 127 : 126;
    print STDERR "n10n-dev: $rest[0]: $!\n";
    POSIX::_exit($code);
  }
  close $ow; close $ew;
  write_all($conn, 'p' . pack('N', $pid)) or do { kill('TERM', -$pid); return };
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
# In the command's process: into the replica (made when missing; `~` is the home, a relative
# path is under it), then into the workdir, which must exist. PWD says where, as `cd` would.
sub enter {
  my ($replica, $workdir, $home) = @_;
  $home //= (getpwuid $<)[7];
  my $here = under_home($replica, $home);
  File::Path::make_path($here) unless -d $here;
  chdir $here or fail("n10n-dev: cannot enter the replica $replica: $!");
  if (length $workdir) {
    my $there = $workdir =~ m{^[/~]} ? under_home($workdir, $home) : "$here/$workdir";
    chdir $there or fail("n10n-dev: -w $workdir: no such directory in the replica");
    $here = $there;
  }
  $ENV{PWD} = $here;
}
sub under_home {
  my ($path, $home) = @_;
  return $home if $path eq '~';
  $path =~ s{^~/}{};
  return $path =~ m{^/} ? $path : "$home/$path";
}
sub fail { print STDERR "$_[0]\n"; POSIX::_exit(255); }
# The environment a login shell of the user's would have, captured once (`$SHELL -lc 'env -0'`)
# and cached beside the socket until a profile file changes (its inode, size, mtime, ctime or
# bytes), so that a command pays for no shell start-up. When it cannot be captured, that is
# cached too, and N10N_LOGIN_SHELL says to start a login shell for each command instead. Who
# the user is comes from the session that started the agent, as sshd set it.
sub login_env {
  my @pw = getpwuid $<;
  my $user = $ENV{USER} // $pw[0];
  my $home = $ENV{HOME} // $pw[7];
  my $shell = $ENV{SHELL} // $pw[8];
  $shell = '/bin/sh' unless $shell && -x $shell;
  my @files = ('/etc/profile', sort(glob('/etc/profile.d/*')), '/etc/environment',
    map { "$home/$_" } qw(.profile .bash_profile .bash_login .bashrc .zprofile .zshenv .zshrc));
  my $key = join "\n", "login-env v5 $user $home $shell", map { stamp($_) } @files;
  my $cache = "$path.env";
  my $env;
  if (open(my $in, '<', $cache)) {
    local $/;
    my ($cached, $text) = split /\n\0/, <$in> // '', 2;
    $env = $text if defined $text && $cached eq $key;
  }
  if (!defined $env) {
    $env = capture_login_env($user, $home, $shell);
    if (open(my $out, '>', "$cache.$$")) {
      print $out "$key\n\0$env";
      close($out) and rename("$cache.$$", $cache);
    }
  }
  return (HOME => $home, USER => $user, LOGNAME => $user, SHELL => $shell,
    PATH => '/usr/local/bin:/usr/bin:/bin:/usr/games', N10N_LOGIN_SHELL => 1) unless length $env;
  my %login = map { split /=/, $_, 2 } grep { /^[^=]+=/ } split /\0/, $env;
  delete @login{qw(_ PWD OLDPWD SHLVL N10N_AGENT_SOCKET N10N_UID)};
  $login{HOME} //= $home;
  return %login;
}
# A file as the cache key sees it: identity, size, times and a checksum of its bytes (the times
# have whole seconds only, and an edit within one second must count too).
sub stamp {
  my $file = shift;
  my @st = stat $file or return "$file -";
  my $sum = '';
  if (open(my $fh, '<', $file)) { local $/; $sum = unpack('%32C*', <$fh> // ''); }
  return "$file @st[1, 7, 9, 10] $sum";
}
# What `$SHELL -lc 'env -0'` prints, started as sshd starts a session (a clean environment, in
# the home); empty when it fails or takes over 30 s. Its stdout and stderr are discarded, so a
# profile that talks does not end up in the environment: the list goes to fd 3.
sub capture_login_env {
  my ($user, $home, $shell) = @_;
  open(my $list, '+>', undef) or return '';
  my $pid = fork;
  return '' unless defined $pid;
  if ($pid == 0) {
    open STDIN, '<', '/dev/null'; open STDOUT, '>', '/dev/null'; open STDERR, '>', '/dev/null';
    # Perl opens files close-on-exec; dup2 onto another number makes a copy without it.
    my $fd = fileno($list);
    $fd = POSIX::dup($fd) if $fd == 3;
    POSIX::dup2($fd, 3) or POSIX::_exit(1);
    chdir $home;
    my %keep = map { defined $ENV{$_} ? ($_ => $ENV{$_}) : () } qw(LANG LC_ALL TZ);
    %ENV = (%keep, HOME => $home, USER => $user, LOGNAME => $user, SHELL => $shell,
      PATH => '/usr/local/bin:/usr/bin:/bin:/usr/games');
    exec { $shell } $shell, '-lc', 'exec env -0 >&3';
    POSIX::_exit(127);
  }
  local $SIG{ALRM} = sub { kill 'KILL', $pid };
  alarm 30;
  waitpid($pid, 0);
  alarm 0;
  return '' if $?;
  seek($list, 0, 0);
  local $/;
  return <$list> // '';
}
