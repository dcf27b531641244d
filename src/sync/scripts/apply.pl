use strict;
use File::Path qw(remove_tree);
my ($staging, $ops, $fresh, $root) = @ARGV;
open(my $fh, '<', $ops) or die "cannot read $ops: $!\n";
my @fields = do { local $/ = "\0"; map { chomp; $_ } <$fh> };
if ($fresh && replace_root()) {
  @fields = ();
  print "replaced\n";
}
my %checked;
sub parents_are_dirs {
  my @parts = split m{/}, shift; pop @parts;
  my $acc = '';
  for my $part (@parts) {
    $acc = $acc eq '' ? $part : "$acc/$part";
    next if $checked{$acc};
    die "refusing to write through symlink $acc\n" if -l $acc;
    die "$acc is not a directory\n" unless -d $acc;
    $checked{$acc} = 1;
  }
}
sub remove {
  my $path = shift;
  if (-d $path && !-l $path) {
    remove_tree($path, { error => \my $errors });
    die "cannot delete $path\n" if @$errors;
  } elsif (-e $path || -l $path) {
    unlink($path) or die "cannot delete $path: $!\n";
  }
}
while (@fields) {
  my ($op, $path) = splice(@fields, 0, 2);
  die "bad path $path\n" if $path =~ m{(^|/)\.\.(/|$)} || $path =~ m{^/};
  if ($op eq 'D') { parents_are_dirs($path); remove($path); %checked = (); }
  elsif ($op eq 'M') {
    parents_are_dirs($path);
    next if rename("$staging/$path", $path);
    remove($path);
    rename("$staging/$path", $path) or die "cannot move $path into place: $!\n";
  }
  else { die "unknown operation $op\n"; }
}
# The staged directory becomes the replica, if that is still empty, with the mode it has. A
# rename onto an empty directory replaces it atomically; when it cannot (the replica filled up
# meanwhile, or is a mount point), the operations move the entries instead. Says `replaced`: the
# replica is a new directory, whose identity the caller takes again.
sub replace_root {
  return 0 if grep { $_ eq 'D' } @fields[grep { $_ % 2 == 0 } 0..$#fields];
  my $mode = (stat $root)[2] // return 0;
  unlink $ops or return 0;
  chmod($mode & 07777, $staging) or return 0;
  return rename($staging, $root);
}
